//! In-memory kernel maps for the stages' unit tests and the replay benchmark
//! ([`super::replay`]): what [`KernelView`] reads and what [`PolicyKernel`] writes, without a
//! kernel.

use std::collections::HashMap;

use agent_common::{ConnState, Counter, DnsAllowKey, UdpFlowKey, UdpFlowValue};

use crate::{
    kernel::{GateDecision, KernelError, KernelView, PolicyKernel},
    policy::{compile::CompiledPolicy, Prefix},
};

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
    pub resolvers: Vec<Prefix>,
    pub gates: HashMap<u64, GateDecision>,
    pub forgotten_gates: Vec<u64>,
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

    fn set_resolvers(&mut self, prefixes: &[Prefix]) -> Result<(), KernelError> {
        self.resolvers = prefixes.to_vec();
        Ok(())
    }

    fn decide_gate(&mut self, cookie: u64, decision: GateDecision) -> Result<(), KernelError> {
        self.gates.insert(cookie, decision);
        Ok(())
    }

    fn forget_gate(&mut self, cookie: u64) {
        self.forgotten_gates.push(cookie);
    }
}
