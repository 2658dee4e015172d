//! A cgroup path (whoever may create cgroups names them: a container with a delegated
//! subtree, a user's systemd) through what egret derives from it: the container and pod
//! (`container::path::parse`), the systemd unit (`cgroup::systemd_unit`), the sockets to ask
//! (`container::fetch::plan`) and the policy's cgroup scope (`cgroup_contains`). Nothing may
//! panic, and what is derived holds the shapes the lines and runtime requests rely on.
//!
//! Input: the path's bytes (read lossily, as the resolver displays a path).
#![no_main]

use egret::{
    cgroup::systemd_unit,
    container::{
        fetch::{plan, Source},
        path::{is_container_id, parse},
        RuntimeConfig,
    },
    policy::matcher::cgroup_contains,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let path = format!("/{}", path.trim_start_matches('/'));
    if let Some(unit) = systemd_unit(&path) {
        assert!(!unit.is_empty() && !unit.contains('/'), "{unit:?}");
        assert!(path.contains(unit));
    }
    assert!(cgroup_contains("/", &path));
    assert!(cgroup_contains(&path, &path));
    if let Some((parent, _)) = path
        .rsplit_once('/')
        .filter(|(p, _)| !p.is_empty() && !p.ends_with('/'))
    {
        assert!(cgroup_contains(parent, &path), "{parent:?} {path:?}");
    }
    let Some(reference) = parse(&path) else {
        return;
    };
    // The id goes into a runtime request (`/containers/{id}/json`): 64 lower-case hex.
    assert!(is_container_id(&reference.id), "{:?}", reference.id);
    assert!(!reference.id.bytes().any(|b| b.is_ascii_uppercase()));
    assert!(path.to_ascii_lowercase().contains(&reference.id));
    if let Some(uid) = &reference.pod_uid {
        assert!(
            uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{uid:?}"
        );
    }
    if let Some(namespace) = &reference.namespace_hint {
        assert!(!namespace.is_empty() && !namespace.contains('/'));
    }
    for source in plan(&reference, &RuntimeConfig::default()) {
        let (Source::Docker(socket) | Source::Containerd(socket) | Source::CriO(socket)) = source;
        assert!(socket.is_absolute(), "{}", socket.display());
    }
});
