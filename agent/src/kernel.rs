//! Loading the kernel programs, attaching them, and handing out their maps.

use std::{fs::File, path::Path};

use agent_common::{Counter, UdpFlowKey, UdpFlowValue};
use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError, TracePoint},
    Ebpf, EbpfError, EbpfLoader,
};

use crate::tracefs::{self, TracefsError};

/// The compiled kernel programs (built by `build.rs`).
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egret"));

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("loading the kernel programs: {0} (egret needs root, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN + CAP_SYS_ADMIN)")]
    Load(#[source] EbpfError),
    #[error("program `{name}` is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("map `{name}` is missing from the object")]
    MissingMap { name: &'static str },
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("--ring-buffer-size {0} must be a power of two and at least 4096 (one page)")]
    RingSize(u32),
}

/// Settings the kernel programs read.
#[derive(Debug, Clone, Copy)]
pub struct KernelConfig {
    pub ring_buffer_size: u32,
    pub udp_idle_ns: u64,
}

/// Maps userspace reads while the programs run (and after they are detached).
pub struct KernelMaps {
    pub events: RingBuf<MapData>,
    pub lookups: KernelLookups,
}

/// The maps event handlers consult while the ring buffer is being drained.
pub struct KernelLookups {
    pub counters: PerCpuArray<MapData, u64>,
    pub udp_flows: HashMap<MapData, UdpFlowKey, UdpFlowValue>,
}

impl KernelLookups {
    /// Sum over CPUs of one counter; 0 if it cannot be read.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters
            .get(&(counter as u32), 0)
            .map(|values| values.iter().copied().fold(0u64, u64::saturating_add))
            .unwrap_or(0)
    }

    pub fn udp_flow(&self, key: &UdpFlowKey) -> Option<UdpFlowValue> {
        self.udp_flows.get(key, 0).ok()
    }
}

/// The loaded, attached programs. Dropping it detaches them all.
pub struct Kernel {
    _ebpf: Ebpf,
}

const CGROUP_SOCK_ADDR: [&str; 4] = ["connect4", "connect6", "sendmsg4", "sendmsg6"];
const TRACEPOINTS: [(&str, &str); 5] = [
    ("sys_enter_execve", "syscalls"),
    ("sys_enter_execveat", "syscalls"),
    ("sched_process_exec", "sched"),
    ("task_newtask", "task"),
    ("sched_process_exit", "sched"),
];

fn program_err(name: &'static str) -> impl FnOnce(ProgramError) -> KernelError {
    move |source| KernelError::Program { name, source }
}

/// Loads the programs, attaches the socket hooks to `cgroup` (a cgroup v2 directory) and the
/// tracepoints host-wide, and returns the maps.
pub fn load_and_attach(
    config: KernelConfig,
    cgroup: &Path,
) -> Result<(Kernel, KernelMaps), KernelError> {
    let KernelConfig {
        ring_buffer_size,
        udp_idle_ns,
    } = config;
    if ring_buffer_size < 4096 || !ring_buffer_size.is_power_of_two() {
        return Err(KernelError::RingSize(ring_buffer_size));
    }
    raise_memlock();
    let tracefs_dir = tracefs::ensure_mounted()?;
    tracefs::check_layouts(tracefs_dir)?;

    let wakeup_bytes = u64::from(ring_buffer_size / 4);
    let mut ebpf = EbpfLoader::new()
        .override_global("UDP_IDLE_NS", &udp_idle_ns, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .map_max_entries("EVENTS", ring_buffer_size)
        .load(PROGRAMS)
        .map_err(KernelError::Load)?;

    // Take the maps first: they stay usable after the programs are detached (final drain).
    let maps = KernelMaps {
        events: RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(|source| {
            KernelError::Map {
                name: "EVENTS",
                source,
            }
        })?,
        lookups: KernelLookups {
            counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?).map_err(
                |source| KernelError::Map {
                    name: "COUNTERS",
                    source,
                },
            )?,
            udp_flows: HashMap::try_from(take_map(&mut ebpf, "UDP_FLOWS")?).map_err(|source| {
                KernelError::Map {
                    name: "UDP_FLOWS",
                    source,
                }
            })?,
        },
    };

    // Tracepoints first, so the process table is fed before the first connect is seen.
    for (name, category) in TRACEPOINTS {
        let program: &mut TracePoint = program_mut(&mut ebpf, name)?;
        program.load().map_err(program_err(name))?;
        program.attach(category, name).map_err(program_err(name))?;
    }

    let cgroup_dir = File::open(cgroup).map_err(|source| KernelError::Program {
        name: "cgroup",
        source: ProgramError::IOError(source),
    })?;
    let mode = cgroup_attach_mode();
    for name in CGROUP_SOCK_ADDR {
        let program: &mut CgroupSockAddr = program_mut(&mut ebpf, name)?;
        program.load().map_err(program_err(name))?;
        program
            .attach(&cgroup_dir, mode)
            .map_err(program_err(name))?;
    }
    let release: &mut CgroupSock = program_mut(&mut ebpf, "sock_release")?;
    release.load().map_err(program_err("sock_release"))?;
    release
        .attach(&cgroup_dir, mode)
        .map_err(program_err("sock_release"))?;

    Ok((Kernel { _ebpf: ebpf }, maps))
}

/// egret must coexist with other cgroup programs (systemd's, a CNI's, another egret's).
/// From 5.7 aya attaches with a BPF link, which is always multi-attach and whose
/// `link_create` rejects the `BPF_F_ALLOW_MULTI` flag, so the flag-free mode is the one that
/// means "multiple" there; older kernels use `BPF_PROG_ATTACH` and need the flag.
fn cgroup_attach_mode() -> CgroupAttachMode {
    match aya::util::KernelVersion::current() {
        Ok(version) if version >= aya::util::KernelVersion::new(5, 7, 0) => {
            CgroupAttachMode::Single
        }
        _ => CgroupAttachMode::AllowMultiple,
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, KernelError> {
    ebpf.take_map(name).ok_or(KernelError::MissingMap { name })
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram { name })?;
    program.try_into().map_err(program_err(name))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Raising it can fail (no
/// CAP_SYS_RESOURCE) and is not needed on newer kernels, so failure is only logged.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}
