//! A veth pair from the root network namespace into a container's own network namespace.
//!
//! The container's namespace (found by its pid) gets a name with `ip netns attach`, so the
//! usual `ip -n` commands work; one end of the pair moves into it. Addresses come from a
//! `198.18.X.0/24` test range not in use on this host (host side `.1`, container side `.2`).
//! Dropped → the pair and the name are deleted (the namespace itself lives and dies with
//! the container).

use anyhow::{bail, Result};
use std::net::Ipv4Addr;

use crate::netns::{ip, VethPlan};

/// A veth pair whose peer is inside a container's network namespace.
#[derive(Debug)]
pub struct ContainerVeth {
    netns: String,
    host_if: String,
    subnet: u8,
}

impl ContainerVeth {
    /// Connects the network namespace of `pid` (a container's first process) to the root
    /// namespace: `eth1` inside with `198.18.X.2/24`, the host end with `198.18.X.1/24`.
    pub fn create(pid: u32) -> Result<Self> {
        // Another subnet offset than NetNs, so the two rarely probe the same subnets.
        let VethPlan {
            netns,
            host_if,
            peer_if: ctr_if,
            subnet,
            subnet_lock: _subnet_lock,
        } = VethPlan::new("ctr", "ec", 'c', 127)?;
        ip(&["netns", "attach", &netns, &pid.to_string()])?;
        let mut me = Self {
            netns,
            host_if: String::new(),
            subnet,
        };
        let ns = me.netns.clone();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ctr_if, "netns", &ns,
        ])?;
        me.host_if = host_if.clone();
        ip(&["-n", &ns, "link", "set", &ctr_if, "name", "eth1"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", me.host_v4()),
            "dev",
            &host_if,
        ])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", me.container_v4()),
            "dev",
            "eth1",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth1", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // Safety net for the network rule: the container's address is reached through this
        // veth, never through a default route.
        let route = ip(&["route", "get", &me.container_v4().to_string()])?;
        let route = String::from_utf8_lossy(&route.stdout);
        if !route.contains(&format!("dev {host_if} ")) {
            bail!(
                "route to {} does not use {host_if}: {route}",
                me.container_v4()
            );
        }
        Ok(me)
    }

    /// The host end's address (bind test servers here).
    pub fn host_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 1)
    }

    /// The container end's address.
    pub fn container_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 2)
    }

    /// The name given to the container's network namespace (`ip netns`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn host_if(&self) -> &str {
        &self.host_if
    }
}

impl Drop for ContainerVeth {
    fn drop(&mut self) {
        if !self.host_if.is_empty() {
            // Gone already when the container (and so its namespace) is.
            let _ = ip(&["link", "del", &self.host_if]);
        }
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            eprintln!("egret-e2e: deleting netns name {}: {e:#}", self.netns);
        }
    }
}
