//! Text egret reads from `/proc` (and from below a container's root) and parses itself: a
//! socket table (`/proc/PID/net/tcp{,6}`, `lineage::established_peer`), an fd link
//! (`socket:[N]`, `lineage::socket_inode`), a command line (`/proc/PID/cmdline`,
//! `process::split_nul`), a mount table (`/proc/self/mounts`, `cgroup::cgroup2_mount_from`,
//! `mount_points_of_type`, `unescape_mount_field`) and a container's `resolv.conf`
//! (`ResolvConf::parse`). Every parser takes the same bytes: nothing may panic, and what is
//! parsed holds its bounds.
#![no_main]

use egret::{
    cgroup::{cgroup2_mount_from, mount_points_of_type, unescape_mount_field},
    dns::resolvers::{ResolvConf, MAX_NAMESERVERS},
    process::{
        lineage::{established_peer, socket_inode},
        split_nul,
    },
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // The inodes of the seeds' sockets, and one from the input.
    let mut inodes = vec![12345, 67890];
    if let Some(first) = data.first_chunk::<8>() {
        inodes.push(u64::from_le_bytes(*first));
    }
    let _ = established_peer(&text, &inodes);
    if socket_inode(&text).is_some() {
        assert!(text.starts_with("socket:[") && text.ends_with(']'));
    }

    let args = split_nul(data);
    assert!(args.len() <= data.len());
    assert!(args.iter().all(|a| !a.contains('\0')));

    let mount = cgroup2_mount_from(data);
    assert_eq!(mount, mount_points_of_type(data, "cgroup2").next());
    assert!(unescape_mount_field(data).len() <= data.len());

    let conf = ResolvConf::parse(&text);
    assert!(conf.nameservers.len() <= MAX_NAMESERVERS);
});
