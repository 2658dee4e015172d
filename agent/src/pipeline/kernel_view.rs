//! What the stages ask of the kernel's maps, as two small traits: the live maps implement
//! them ([`crate::kernel::KernelLookups`], [`crate::kernel::PolicyMaps`]), and unit tests give
//! the stages in-memory maps instead, so no stage needs a kernel to be tested.

use std::collections::HashMap;

use agent_common::{ConnState, Counter, DnsAllowKey, UdpFlowKey, UdpFlowValue};

use crate::{
    kernel::{KernelError, KernelLookups, PolicyMaps},
    policy::compile::CompiledPolicy,
};

/// Reads of the maps the programs write: counters, UDP flows, open TCP connections.
pub trait KernelView {
    /// Sum over CPUs of one counter; 0 if it cannot be read.
    fn counter(&self, counter: Counter) -> u64;
    fn udp_flow(&self, key: &UdpFlowKey) -> Option<UdpFlowValue>;
    /// The kernel's state of an open TCP connection.
    fn conn(&self, cookie: u64) -> Option<ConnState>;
}

/// Writes of the policy maps the socket programs read (block mode).
pub trait PolicyKernel {
    /// Installs a whole policy (and the answer addresses it approves) in one switch.
    fn install(
        &mut self,
        compiled: &CompiledPolicy,
        scope_ids: &HashMap<u64, u64>,
        learned: &[(DnsAllowKey, u64)],
    ) -> Result<(), KernelError>;
    /// Adds approved answer addresses to the live policy.
    fn learn(&mut self, learned: &[(DnsAllowKey, u64)]) -> Result<(), KernelError>;
    /// Adds scope bits of cgroups to the live policy; returns how many were new.
    fn add_scopes(&mut self, scope_ids: &HashMap<u64, u64>) -> Result<usize, KernelError>;
}

impl KernelView for KernelLookups {
    fn counter(&self, counter: Counter) -> u64 {
        Self::counter(self, counter)
    }

    fn udp_flow(&self, key: &UdpFlowKey) -> Option<UdpFlowValue> {
        Self::udp_flow(self, key)
    }

    fn conn(&self, cookie: u64) -> Option<ConnState> {
        Self::conn(self, cookie)
    }
}

impl PolicyKernel for PolicyMaps {
    fn install(
        &mut self,
        compiled: &CompiledPolicy,
        scope_ids: &HashMap<u64, u64>,
        learned: &[(DnsAllowKey, u64)],
    ) -> Result<(), KernelError> {
        Self::install(self, compiled, scope_ids, learned)
    }

    fn learn(&mut self, learned: &[(DnsAllowKey, u64)]) -> Result<(), KernelError> {
        Self::learn(self, learned)
    }

    fn add_scopes(&mut self, scope_ids: &HashMap<u64, u64>) -> Result<usize, KernelError> {
        Self::add_scopes(self, scope_ids)
    }
}

/// In-memory maps for the stages' unit tests.
#[cfg(test)]
pub mod fake {
    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeKernel {
        pub counters: HashMap<u32, u64>,
        pub udp_flows: HashMap<UdpFlowKey, UdpFlowValue>,
        pub conns: HashMap<u64, ConnState>,
    }

    impl KernelView for FakeKernel {
        fn counter(&self, counter: Counter) -> u64 {
            self.counters.get(&(counter as u32)).copied().unwrap_or(0)
        }

        fn udp_flow(&self, key: &UdpFlowKey) -> Option<UdpFlowValue> {
            self.udp_flows.get(key).copied()
        }

        fn conn(&self, cookie: u64) -> Option<ConnState> {
            self.conns.get(&cookie).copied()
        }
    }

    /// Records what the judgement stage installs.
    #[derive(Debug, Default)]
    pub struct FakePolicy {
        pub installs: usize,
        pub learned: Vec<(DnsAllowKey, u64)>,
        pub scopes: HashMap<u64, u64>,
    }

    impl PolicyKernel for FakePolicy {
        fn install(
            &mut self,
            _compiled: &CompiledPolicy,
            scope_ids: &HashMap<u64, u64>,
            learned: &[(DnsAllowKey, u64)],
        ) -> Result<(), KernelError> {
            self.installs += 1;
            self.scopes.clone_from(scope_ids);
            self.learned = learned.to_vec();
            Ok(())
        }

        fn learn(&mut self, learned: &[(DnsAllowKey, u64)]) -> Result<(), KernelError> {
            self.learned.extend_from_slice(learned);
            Ok(())
        }

        fn add_scopes(&mut self, scope_ids: &HashMap<u64, u64>) -> Result<usize, KernelError> {
            let before = self.scopes.len();
            self.scopes
                .extend(scope_ids.iter().map(|(id, bits)| (*id, *bits)));
            Ok(self.scopes.len() - before)
        }
    }
}
