//! Container and Kubernetes identity on connection lines, from real runtimes.
//!
//! Each test starts its own containerd or dockerd (private sockets, roots and state; see
//! `egret_e2e::runtime`), runs busybox containers below its own test cgroup, and starts egret
//! on that cgroup with the runtime's socket (`--containerd-socket`, `--docker-socket`).
//! Kubernetes is what the kubelet and the CRI plugin leave on a container: its labels, the
//! CRI annotations, and the cgroup `.../kubepods/besteffort/pod<uid>/<container id>`; no
//! kubelet runs.
//!
//! The `harness_*` tests check the runtime harness itself (no egret): cgroup placement,
//! image import, networking and teardown.
//!
//! Missing runtime packages are installed when we are root (`apt-get install -y containerd
//! runc docker.io busybox-static`); when that is impossible the tests skip, or fail under
//! `CI=true`.

use anyhow::{ensure, Context, Result};
use egret_e2e::dns::is_dns_answer;
use egret_e2e::expect::{check_field_absent, check_field_str, has_arg, is_flow};
use egret_e2e::policy::check_verdict;
use egret_e2e::runtime::containerd::K8S_NAMESPACE;
use egret_e2e::runtime::{
    cgroup_v2_path, ensure_installed, go, pid_alive, wait_for_go_then, ContainerVeth, Containerd,
    Dockerd, KubePod, RunSpec, Runtime, Tools, V1Mirrors, IMAGE_REF,
};
use egret_e2e::{
    cgroup2_mount, field, field_str, prerequisite, skip, wait_until, Harness, PolicyDir, TcpServer,
    TestCgroup, LINE_TIMEOUT,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long one container may run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Root and the runtime packages (installed when missing); `Ok(None)`: skip.
fn tools(runtimes: &[Runtime]) -> Result<Option<Tools>> {
    prerequisite(skip::require_root().and_then(|()| ensure_installed(runtimes)))
}

/// busybox: a TCP connection to `host port` (the test server reads and closes); prints
/// `nc=<status>`. (Not `wget -T`: the static busybox's wget crashes on its error path when
/// a timeout is set and there is no locale or NSS data, as in this image.)
fn connect(target: &str) -> String {
    format!("nc -w 5 {target} </dev/null; echo nc=$?")
}

/// `host port` for busybox `nc`.
fn target(addr: SocketAddr) -> String {
    format!("{} {}", addr.ip(), addr.port())
}

fn is_64_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container fields every runtime fills.
fn check_container(v: &Value, id: &str, runtime: &str, name: &str) -> Result<()> {
    ensure!(is_64_hex(id), "container id {id:?} is not 64 hex");
    check_field_str(v, "container.id", id)?;
    check_field_str(v, "container.runtime", runtime)?;
    check_field_str(v, "container.name", name)?;
    check_field_str(v, "container.image.name", IMAGE_REF)?;
    Ok(())
}

/// The Kubernetes fields of a container of `pod` named `container`.
fn check_k8s(v: &Value, pod: &KubePod, container: &str) -> Result<()> {
    check_field_str(v, "orchestrator.type", "kubernetes")?;
    check_field_str(v, "orchestrator.namespace", &pod.namespace)?;
    check_field_str(v, "orchestrator.resource.type", "pod")?;
    check_field_str(v, "orchestrator.resource.name", &pod.name)?;
    check_field_str(v, "egret.k8s.pod.uid", &pod.uid)?;
    check_field_str(v, "egret.k8s.container.name", container)?;
    Ok(())
}

/// A test cgroup and a private containerd with the image imported into `k8s.io`; egret not
/// started yet (containers can be started first).
struct CtrPrep {
    cg: TestCgroup,
    rt: Containerd,
    v1: V1Mirrors,
}

impl CtrPrep {
    fn setup(name: &str) -> Result<Option<Self>> {
        let Some(cg) = Harness::cgroup(name)? else {
            return Ok(None);
        };
        let Some(tools) = tools(&[Runtime::Containerd])? else {
            return Ok(None);
        };
        let v1 = V1Mirrors::of(&cg)?;
        let rt = Containerd::start_with(&tools)?;
        rt.import_image(K8S_NAMESPACE)?;
        Ok(Some(Self { cg, rt, v1 }))
    }

    fn cgroup_rel(&self) -> String {
        self.cg.relative_path()
    }

    /// egret on the cgroup with `--containerd-socket` and `extra`.
    fn start_egret(self, extra: &[&str]) -> Result<CtrEnv> {
        let Self { cg, rt, v1 } = self;
        let sock = rt.socket().display().to_string();
        let mut args = vec!["--containerd-socket", sock.as_str()];
        args.extend_from_slice(extra);
        match Harness::start(cg, &args) {
            Ok(h) => Ok(CtrEnv { h, rt, _v1: v1 }),
            Err(e) => {
                drop(rt);
                drop(v1);
                Err(e)
            }
        }
    }
}

/// A test cgroup, a private containerd with the image imported into `k8s.io`, and egret
/// watching the cgroup with `--containerd-socket`. Fields drop in order: egret and the
/// cgroup, then containerd (containers, daemon, mounts), then the v1 cgroup copies.
struct CtrEnv {
    h: Harness,
    rt: Containerd,
    _v1: V1Mirrors,
}

impl CtrEnv {
    fn setup(name: &str, extra: &[&str]) -> Result<Option<Self>> {
        match CtrPrep::setup(name)? {
            Some(prep) => prep.start_egret(extra).map(Some),
            None => Ok(None),
        }
    }

    fn cgroup_rel(&self) -> String {
        self.h.cgroup.relative_path()
    }

    fn finish(self) -> Result<()> {
        let Self { h, rt, _v1 } = self;
        let r = h.finish();
        drop(rt);
        r
    }
}

/// `sh -c <script>` in a container named `name`.
fn sh_spec(name: &str, script: &str) -> RunSpec {
    RunSpec::new(name, &["sh", "-c", script])
}

/// A line from container `id` (`container` of `pod`, started by containerd below the test
/// cgroup `under`): its container and Kubernetes fields and its cgroup path.
fn check_pod_container(
    ev: &Value,
    pod: &KubePod,
    under: &str,
    id: &str,
    container: &str,
) -> Result<()> {
    check_container(ev, id, "containerd", container)?;
    check_k8s(ev, pod, container)?;
    check_field_str(
        ev,
        "egret.cgroup.path",
        &format!("{}/{}", pod.cgroup_parent(under), id),
    )
}

#[test]
fn containerd_kubernetes_pod_identity() -> Result<()> {
    let Some(mut env) = CtrEnv::setup("ctr-k8s", &[])? else {
        return Ok(());
    };
    let server = TcpServer::loopback()?;
    let port = server.port();
    let pod = KubePod::new("web-6d9f7c5b8-x2x7q", "shop");
    let spec = sh_spec(
        "web",
        &format!("{}; sleep 60", connect(&format!("127.0.0.1 {port}"))),
    )
    .in_pod(&pod, "web", &env.cgroup_rel());
    let c = env.rt.start_container(K8S_NAMESPACE, &spec)?;
    let ev = env.h.egret.wait_for_flow("connect", "tcp", port)?;
    check_pod_container(&ev, &pod, &env.cgroup_rel(), &c.id, "web")?;
    check_field_str(&ev, "destination.ip", "127.0.0.1")?;
    env.rt.remove(K8S_NAMESPACE, &c.id)?;
    env.finish()
}

#[test]
fn containerd_short_lived_container_keeps_identity() -> Result<()> {
    let Some(mut env) = CtrEnv::setup("ctr-short", &[])? else {
        return Ok(());
    };
    let server = TcpServer::loopback()?;
    let port = server.port();
    let pod = KubePod::new("job-28311-abcde", "batch");
    // Starts, connects, exits: `ctr run --rm` returns only once the container is gone.
    let spec = sh_spec(
        "once",
        &format!("{}; exit 0", connect(&format!("127.0.0.1 {port}"))),
    )
    .in_pod(&pod, "once", &env.cgroup_rel());
    let run = env
        .rt
        .run(K8S_NAMESPACE, &spec, RUN_TIMEOUT)?
        .ensure_success()?;
    ensure!(
        server.accepted() >= 1,
        "the server saw no connection; container said: {} {}",
        run.stdout,
        run.stderr
    );
    let ev = env.h.egret.wait_for_flow("connect", "tcp", port)?;
    check_pod_container(&ev, &pod, &env.cgroup_rel(), &run.id, "once")?;
    env.finish()
}

#[test]
fn containerd_container_started_before_egret() -> Result<()> {
    let Some(prep) = CtrPrep::setup("ctr-before")? else {
        return Ok(());
    };
    let pod = KubePod::new("cache-0", "infra");
    // Running before egret starts; connects only when told to.
    let spec = sh_spec(
        "cache",
        &format!("{}; sleep 60", wait_for_go_then(&connect("$GO"))),
    )
    .in_pod(&pod, "cache", &prep.cgroup_rel());
    let c = prep.rt.start_container(K8S_NAMESPACE, &spec)?;
    let mut env = prep.start_egret(&[])?;
    let server = TcpServer::loopback()?;
    let port = server.port();
    go(c.pid, &target(server.addr()))?;
    let ev = env.h.egret.wait_for_flow("connect", "tcp", port)?;
    check_container(&ev, &c.id, "containerd", "cache")?;
    check_k8s(&ev, &pod, "cache")?;
    env.rt.remove(K8S_NAMESPACE, &c.id)?;
    env.finish()
}

/// base64url without padding (a JWT part).
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let index = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(*A.get(index).unwrap_or(&b'A')));
        }
    }
    out
}

/// A Deployment's pod as the kubelet hands it to containerd: the pod's labels
/// (`pod-template-hash`) on the sandbox only, the app container pointing at its sandbox, and
/// the service-account token bind-mounted at the kubelet's path. egret reports the owning
/// Deployment and the service account; a pod with a `pod-template-hash` its name does not
/// carry is reported without a parent.
#[test]
fn containerd_deployment_workload_and_service_account() -> Result<()> {
    let Some(mut env) = CtrEnv::setup("ctr-workload", &[])? else {
        return Ok(());
    };
    let server = TcpServer::loopback()?;
    let port = server.port();
    let token_dir = egret_e2e::ScratchDir::create("sa-token")?;
    let claims = r#"{"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:shop:checkout-sa","kubernetes.io":{"namespace":"shop","serviceaccount":{"name":"checkout-sa","uid":"u"}}}"#;
    let token = format!(
        "{}.{}.c2ln",
        base64url(br#"{"alg":"RS256","kid":"k"}"#),
        base64url(claims.as_bytes())
    );
    std::fs::write(token_dir.path().join("token"), token)?;
    let mut pod = KubePod::new("checkout-7b9c8d6f5-x2x7q", "shop");
    pod.labels = vec![
        ("app".to_string(), "checkout".to_string()),
        ("pod-template-hash".to_string(), "7b9c8d6f5".to_string()),
    ];
    let sandbox = env
        .rt
        .start_sandbox(K8S_NAMESPACE, &mut pod, &env.cgroup_rel(), true)?;
    let spec = sh_spec(
        "checkout",
        &format!("{}; sleep 60", connect(&format!("127.0.0.1 {port}"))),
    )
    .in_pod(&pod, "checkout", &env.cgroup_rel())
    .bind_mount(
        &token_dir.path().display().to_string(),
        "/var/run/secrets/kubernetes.io/serviceaccount",
    );
    let c = env.rt.start_container(K8S_NAMESPACE, &spec)?;
    let ev = env.h.egret.wait_for_flow("connect", "tcp", port)?;
    check_pod_container(&ev, &pod, &env.cgroup_rel(), &c.id, "checkout")?;
    check_field_str(&ev, "orchestrator.resource.parent.type", "Deployment")?;
    check_field_str(&ev, "orchestrator.resource.parent.name", "checkout")?;
    check_field_str(&ev, "egret.k8s.pod.service_account", "checkout-sa")?;

    // The same labels on a pod whose name does not carry the hash: no parent.
    let server2 = TcpServer::loopback()?;
    let port2 = server2.port();
    let mut liar = KubePod::new("checkout-x2x7q", "shop");
    liar.labels = pod.labels.clone();
    let liar_sandbox = env
        .rt
        .start_sandbox(K8S_NAMESPACE, &mut liar, &env.cgroup_rel(), true)?;
    let spec = sh_spec(
        "liar",
        &format!("{}; sleep 60", connect(&format!("127.0.0.1 {port2}"))),
    )
    .in_pod(&liar, "liar", &env.cgroup_rel());
    let c2 = env.rt.start_container(K8S_NAMESPACE, &spec)?;
    let ev2 = env.h.egret.wait_for_flow("connect", "tcp", port2)?;
    check_k8s(&ev2, &liar, "liar")?;
    check_field_absent(&ev2, "orchestrator.resource.parent")?;
    check_field_absent(&ev2, "egret.k8s.pod.service_account")?;
    for id in [&c.id, &sandbox.id, &c2.id, &liar_sandbox.id] {
        env.rt.remove(K8S_NAMESPACE, id)?;
    }
    env.finish()
}

#[test]
fn containerd_own_network_namespace_via_veth() -> Result<()> {
    let Some(mut env) = CtrEnv::setup("ctr-netns", &[])? else {
        return Ok(());
    };
    // As in Kubernetes: the pod's sandbox holds the network namespace, the app container
    // joins it. A veth connects the namespace to a server on the host end.
    let mut pod = KubePod::new("api-5f8d-qq9zt", "shop");
    let sandbox = env
        .rt
        .start_sandbox(K8S_NAMESPACE, &mut pod, &env.cgroup_rel(), false)?;
    let veth = ContainerVeth::create(sandbox.pid)?;
    let server = TcpServer::start(SocketAddr::new(veth.host_v4().into(), 0))?;
    let port = server.port();
    let spec = sh_spec(
        "api",
        &format!("{}; sleep 60", connect(&target(server.addr()))),
    )
    .in_pod(&pod, "api", &env.cgroup_rel())
    .join_network_of(sandbox.pid);
    let c = env.rt.start_container(K8S_NAMESPACE, &spec)?;
    let ev = env.h.egret.wait_for_flow("connect", "tcp", port)?;
    check_field_str(&ev, "destination.ip", &veth.host_v4().to_string())?;
    check_pod_container(&ev, &pod, &env.cgroup_rel(), &c.id, "api")?;
    ensure!(
        wait_until(Duration::from_secs(10), || Ok(server.accepted() >= 1))?,
        "the server on the veth saw no connection"
    );
    env.rt.remove(K8S_NAMESPACE, &c.id)?;
    env.rt.remove(K8S_NAMESPACE, &sandbox.id)?;
    drop(veth);
    env.finish()
}

#[test]
fn containerd_block_mode_namespace_rule() -> Result<()> {
    let server = TcpServer::loopback()?;
    let port = server.port();
    let (_dir, policy) = PolicyDir::with_policy("ctr-ns", &format!(
            "mode: block\nloopback: audit\nrules:\n  - name: team-a\n    to: [\"127.0.0.1/32\"]\n    ports: [{port}]\n    namespaces: [\"team-a\"]\n"
        ))?;
    let policy = policy.display().to_string();
    let Some(mut env) = CtrEnv::setup("ctr-block", &["--policy", &policy])? else {
        return Ok(());
    };
    // The documented contract (docs/containers.md): a container's connections that only a
    // container-scoped rule approves are refused until egret has identified the container,
    // which starts when its cgroup is created. So each container here waits until egret
    // reports it identified, then connects: that connection must follow the rule.
    let wait_identified = |env: &mut CtrEnv, n: u64| {
        env.h.egret.wait_for(
            |v| {
                field_str(v, "event.kind") == Some("metric")
                    && egret_e2e::json::field_u64(v, "egret.metrics.containers_cached")
                        .is_some_and(|c| c >= n)
            },
            LINE_TIMEOUT,
        )
    };
    let script = wait_for_go_then(&connect("$GO"));

    let pod_a = KubePod::new("client-a-7c9d-aaaaa", "team-a");
    let spec_a = RunSpec::new("client", &["sh", "-c", &format!("{script}; sleep 30")]).in_pod(
        &pod_a,
        "client",
        &env.cgroup_rel(),
    );
    let a = env.rt.start_container(K8S_NAMESPACE, &spec_a)?;
    wait_identified(&mut env, 1)?;
    let before = server.accepted();
    go(a.pid, &target(server.addr()))?;
    let ev_a = env.h.egret.wait_for(
        |v| is_flow(v, "connect", "tcp", port) && field_str(v, "container.id") == Some(&a.id),
        LINE_TIMEOUT,
    )?;
    check_verdict(&ev_a, "approved", "block", Some("team-a"))?;
    check_k8s(&ev_a, &pod_a, "client")?;
    ensure!(
        wait_until(LINE_TIMEOUT, || Ok(server.accepted() > before))?,
        "team-a's connection never reached the server"
    );

    let pod_b = KubePod::new("client-b-7c9d-bbbbb", "team-b");
    let spec_b = RunSpec::new("client", &["sh", "-c", &format!("{script}; sleep 30")]).in_pod(
        &pod_b,
        "client",
        &env.cgroup_rel(),
    );
    let b = env.rt.start_container(K8S_NAMESPACE, &spec_b)?;
    wait_identified(&mut env, 2)?;
    let before = server.accepted();
    go(b.pid, &target(server.addr()))?;
    let ev_b = env.h.egret.wait_for(
        |v| is_flow(v, "connect", "tcp", port) && field_str(v, "container.id") == Some(&b.id),
        LINE_TIMEOUT,
    )?;
    check_verdict(&ev_b, "blocked", "block", None)?;
    check_k8s(&ev_b, &pod_b, "client")?;
    ensure!(
        server.accepted() == before,
        "the server accepted team-b's connection"
    );
    env.rt.remove(K8S_NAMESPACE, &a.id)?;
    env.rt.remove(K8S_NAMESPACE, &b.id)?;
    env.finish()
}

/// The cgroup parent of Docker containers below test cgroup `cg`: `<cg>/docker`, so that a
/// container's cgroup is `<cg>/docker/<id>`, as `/docker/<id>` is on a host whose dockerd
/// uses the cgroupfs driver and its default parent.
fn docker_parent(cg: &TestCgroup) -> String {
    format!("{}/docker", cg.relative_path())
}

/// A test cgroup, a private dockerd whose containers go below it, and egret watching it
/// with `--docker-socket`.
struct DockerEnv {
    h: Harness,
    rt: Dockerd,
    _v1: V1Mirrors,
}

impl DockerEnv {
    fn setup(name: &str, extra: &[&str]) -> Result<Option<Self>> {
        let Some(cg) = Harness::cgroup(name)? else {
            return Ok(None);
        };
        let Some(tools) = tools(&[Runtime::Docker])? else {
            return Ok(None);
        };
        let v1 = V1Mirrors::of(&cg)?;
        let rt = Dockerd::start_with(&tools, Some(&docker_parent(&cg)))?;
        rt.load_image()?;
        let sock = rt.socket().display().to_string();
        let mut args = vec!["--docker-socket", sock.as_str()];
        args.extend_from_slice(extra);
        let h = Harness::start(cg, &args)?;
        Ok(Some(Self { h, rt, _v1: v1 }))
    }

    fn finish(self) -> Result<()> {
        let Self { h, rt, _v1 } = self;
        let r = h.finish();
        drop(rt);
        r
    }
}

#[test]
fn docker_container_identity() -> Result<()> {
    let Some(mut env) = DockerEnv::setup("docker", &[])? else {
        return Ok(());
    };
    let server = TcpServer::loopback()?;
    let port = server.port();
    let name = format!("egret-web-{}", egret_e2e::unique_suffix());
    let spec = RunSpec::new(
        &name,
        &[
            "sh",
            "-c",
            &format!("{}; sleep 60", connect(&format!("127.0.0.1 {port}"))),
        ],
    )
    .label("app", "web");
    let c = env.rt.start_container(&spec)?;
    let ev = env.h.egret.wait_for_flow("connect", "tcp", port)?;
    check_container(&ev, &c.id, "docker", &name)?;
    check_field_str(
        &ev,
        "egret.cgroup.path",
        &format!("{}/{}", docker_parent(&env.h.cgroup), c.id),
    )?;
    check_field_absent(&ev, "orchestrator.type")?;

    // A second container that connects and exits at once keeps its identity too.
    let server2 = TcpServer::loopback()?;
    let port2 = server2.port();
    let name2 = format!("egret-once-{}", egret_e2e::unique_suffix());
    let spec2 = RunSpec::new(
        &name2,
        &[
            "sh",
            "-c",
            &format!("{}; exit 0", connect(&format!("127.0.0.1 {port2}"))),
        ],
    );
    let run = env.rt.run(&spec2, RUN_TIMEOUT)?.ensure_success()?;
    let ev2 = env.h.egret.wait_for_flow("connect", "tcp", port2)?;
    check_container(&ev2, &run.id, "docker", &name2)?;
    env.rt.remove(&c.id)?;
    env.finish()
}

/// Docker's embedded DNS (user-defined networks, docker compose's default network): the
/// containers' `resolv.conf` says `nameserver 127.0.0.11`, and dockerd's NAT rules inside each
/// container's namespace send `127.0.0.11:53` to a port of dockerd's and give the answers
/// their source `127.0.0.11:53` back. The query leaves the client with dockerd's port; egret
/// must remember the resolver the client addressed, so that the answer is believed and names
/// the connection (docs/dns.md, "Resolvers behind NAT").
#[test]
fn docker_embedded_dns_names_connections() -> Result<()> {
    let Some(mut env) = DockerEnv::setup("dkr-dns", &["--dns-events"])? else {
        return Ok(());
    };
    let suffix = egret_e2e::unique_suffix();
    let net = format!("egret-net-{suffix}");
    env.rt.create_network(&net)?;
    let server = format!("egret-srv-{suffix}");
    env.rt.start_container(
        &RunSpec::new(
            &server,
            &["busybox", "httpd", "-f", "-p", "8080", "-h", "/"],
        )
        .network(&net),
    )?;
    // The client's first process resolves the server and stays connected a few seconds: long
    // enough for egret to identify the container and read its resolv.conf (127.0.0.11 becomes
    // a trusted resolver).
    let client = format!("egret-cli-{suffix}");
    let first = format!("sleep 8 | nc {server} 8080; sleep 60");
    env.rt
        .start_container(&RunSpec::new(&client, &["sh", "-c", &first]).network(&net))?;
    env.h.egret.wait_for_flow("connect", "tcp", 8080)?;
    ensure!(
        wait_until(LINE_TIMEOUT, || Ok(env.h.egret.stderr_text()?.lines().any(
            |l| l.contains("trusted resolvers (") && l.contains("127.0.0.11/32")
        )))?,
        "egret never trusted the container's resolver 127.0.0.11\n--- stderr ---\n{}",
        env.h.egret.stderr_tail()
    );
    // Now a lookup and a connect egret must name from the embedded DNS's answer.
    let marker = format!("/egret-mark-{suffix}");
    let url = format!("http://{server}:8080{marker}");
    let out = env.rt.exec(
        &client,
        &["wget", "-q", "-O", "/dev/null", &url],
        RUN_TIMEOUT,
    )?;
    eprintln!("wget: {} {} {}", out.status, out.stdout, out.stderr);
    let conn = env
        .h
        .egret
        .wait_for_marked_flow("connect", "tcp", 8080, &url)?;
    check_field_str(&conn, "destination.domain", &server)?;
    check_field_str(&conn, "egret.destination.name_source", "dns")?;
    let answer = env.h.egret.wait_for(
        |v| {
            is_dns_answer(v, &server)
                && field_str(v, "dns.question.type") == Some("A")
                && has_arg(v, &url)
        },
        LINE_TIMEOUT,
    )?;
    check_field_str(&answer, "source.ip", "127.0.0.11")?;
    ensure!(
        field(&answer, "source.port").and_then(Value::as_u64) == Some(53),
        "the answer should come from port 53 (NAT undone)\nline: {answer}"
    );
    ensure!(
        field(&answer, "egret.dns.trusted").and_then(Value::as_bool) == Some(true)
            && field(&answer, "egret.dns.untrusted").is_none(),
        "the embedded DNS's answer to the client's own query should be believed\nline: {answer}"
    );
    env.finish()
}

// ---- The runtime harness itself (no egret) ----

/// Waits until `server` has accepted more than `before` connections.
fn wait_accepted(server: &TcpServer, before: u64) -> Result<()> {
    ensure!(
        wait_until(Duration::from_secs(10), || Ok(server.accepted() > before))?,
        "the test server saw no new connection"
    );
    Ok(())
}

/// The container's first process is in `want` (relative to the cgroup2 mount) in the
/// unified hierarchy, below `cg`.
fn check_placement(pid: u32, want: &str, cg: &TestCgroup) -> Result<()> {
    let got = cgroup_v2_path(pid)?;
    ensure!(
        got == want,
        "pid {pid} is in cgroup v2 {got:?}, want {want:?}"
    );
    ensure!(
        got.starts_with(&format!("{}/", cg.relative_path())),
        "{got} is not below the test cgroup {}",
        cg.relative_path()
    );
    let procs = std::fs::read_to_string(
        cgroup2_mount()?
            .join(want.trim_start_matches('/'))
            .join("cgroup.procs"),
    )?;
    ensure!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "pid {pid} not in {want}/cgroup.procs: {procs:?}"
    );
    Ok(())
}

#[test]
fn harness_containerd_runs_kubelet_style_containers_below_the_test_cgroup() -> Result<()> {
    let Some(cg) = prerequisite(skip::require_root().and_then(|()| TestCgroup::create("ctr-h")))?
    else {
        return Ok(());
    };
    let Some(tools) = tools(&[Runtime::Containerd])? else {
        return Ok(());
    };
    let v1 = V1Mirrors::of(&cg)?;
    let rt = Containerd::start_with(&tools)?;
    let (dir, daemon) = (rt.dir().to_path_buf(), rt.pid());
    let import = rt.import_image(K8S_NAMESPACE)?;
    eprintln!(
        "containerd: started in {:?} (snapshotter {}), image import {import:?}",
        rt.started_in(),
        rt.snapshotter()
    );

    // A long-running kubelet-style container: placement and labels.
    let pod = KubePod::new("harness-1", "harness");
    let t0 = Instant::now();
    let spec =
        RunSpec::new("sleeper", &["sleep", "60"]).in_pod(&pod, "sleeper", &cg.relative_path());
    let c = rt.start_container(K8S_NAMESPACE, &spec)?;
    eprintln!("containerd: detached container up in {:?}", t0.elapsed());
    let want = format!("{}/{}", pod.cgroup_parent(&cg.relative_path()), c.id);
    check_placement(c.pid, &want, &cg)?;
    ensure!(c.cgroup.as_deref() == Some(want.as_str()), "{:?}", c.cgroup);
    let info = rt
        .ctr_cmd(K8S_NAMESPACE)
        .args(["containers", "info", &c.id])
        .output()?;
    let info: Value = serde_json::from_slice(&info.stdout)?;
    ensure!(
        field_str(&info, "Image") == Some(IMAGE_REF),
        "image: {:?}",
        field(&info, "Image")
    );
    let labels = field(&info, "Labels").context("no Labels")?;
    for (k, v) in pod.labels("sleeper") {
        ensure!(
            labels.get(&k).and_then(Value::as_str) == Some(v.as_str()),
            "label {k}: {:?}",
            labels.get(&k)
        );
    }
    let v1_dirs = v1.existing();
    eprintln!("containerd: cgroup v2 {want}; v1 copies: {v1_dirs:?}");

    // Host network, connect to a loopback server, exit.
    let server = TcpServer::loopback()?;
    let t0 = Instant::now();
    let spec = sh_spec(
        "once",
        &format!("cat /proc/self/cgroup; {}", connect(&target(server.addr()))),
    )
    .in_pod(&pod, "once", &cg.relative_path());
    let run = rt
        .run(K8S_NAMESPACE, &spec, RUN_TIMEOUT)?
        .ensure_success()?;
    eprintln!(
        "containerd: run --rm (start, connect, exit) took {:?}",
        t0.elapsed()
    );
    wait_accepted(&server, 0)
        .with_context(|| format!("container output: {}\n{}", run.stdout, run.stderr))?;
    let want_once = format!("0::{}/{}", pod.cgroup_parent(&cg.relative_path()), run.id);
    ensure!(
        run.stdout.lines().any(|l| l.trim() == want_once),
        "the container saw itself in another cgroup (want {want_once}):\n{}",
        run.stdout
    );

    // Own network namespace: a veth in, a server on the host end.
    let spec = sh_spec(
        "netns",
        &format!("{}; sleep 60", wait_for_go_then(&connect("$GO"))),
    )
    .own_network()
    .in_pod(&pod, "netns", &cg.relative_path());
    let n = rt.start_container(K8S_NAMESPACE, &spec)?;
    let own = std::fs::read_link(format!("/proc/{}/ns/net", n.pid))?;
    let host = std::fs::read_link("/proc/self/ns/net")?;
    ensure!(
        own != host,
        "the container shares the host's network namespace"
    );
    let veth = ContainerVeth::create(n.pid)?;
    let server2 = TcpServer::start(SocketAddr::new(veth.host_v4().into(), 0))?;
    go(n.pid, &target(server2.addr()))?;
    wait_accepted(&server2, 0)?;

    // A pod sandbox holding the namespace, and an app container joining it.
    let mut pod2 = KubePod::new("harness-2", "harness");
    let sandbox = rt.start_sandbox(K8S_NAMESPACE, &mut pod2, &cg.relative_path(), false)?;
    check_placement(
        sandbox.pid,
        &format!("{}/{}", pod2.cgroup_parent(&cg.relative_path()), sandbox.id),
        &cg,
    )?;
    let veth2 = ContainerVeth::create(sandbox.pid)?;
    let server3 = TcpServer::start(SocketAddr::new(veth2.host_v4().into(), 0))?;
    let spec = sh_spec(
        "app",
        &format!("{}; sleep 60", connect(&target(server3.addr()))),
    )
    .in_pod(&pod2, "app", &cg.relative_path())
    .join_network_of(sandbox.pid);
    let app = rt.start_container(K8S_NAMESPACE, &spec)?;
    ensure!(
        std::fs::read_link(format!("/proc/{}/ns/net", app.pid))?
            == std::fs::read_link(format!("/proc/{}/ns/net", sandbox.pid))?,
        "the app container did not join the sandbox's network namespace"
    );
    wait_accepted(&server3, 0)?;
    let info = rt
        .ctr_cmd(K8S_NAMESPACE)
        .args(["containers", "info", &app.id])
        .output()?;
    let info: Value = serde_json::from_slice(&info.stdout)?;
    let sid = field(&info, "Spec")
        .and_then(|s| s.get("annotations"))
        .and_then(|a| a.get("io.kubernetes.cri.sandbox-id"))
        .and_then(Value::as_str);
    ensure!(
        sid == Some(sandbox.id.as_str()),
        "sandbox-id annotation: {sid:?}"
    );
    drop(veth2);

    // Teardown: containers, daemon, shims, mounts, files, v1 cgroup copies.
    rt.remove(K8S_NAMESPACE, &n.id)?;
    drop(veth);
    let t0 = Instant::now();
    drop(rt);
    eprintln!("containerd: teardown took {:?}", t0.elapsed());
    ensure!(!pid_alive(c.pid), "container process {} survived", c.pid);
    if let Some(p) = daemon {
        ensure!(!pid_alive(p), "containerd {p} survived");
    }
    ensure!(!dir.exists(), "{} was not removed", dir.display());
    drop(cg);
    drop(v1);
    ensure!(
        v1_dirs.iter().all(|d| !d.exists()),
        "cgroup v1 copies left: {v1_dirs:?}"
    );
    Ok(())
}

#[test]
fn harness_dockerd_runs_containers_below_the_test_cgroup() -> Result<()> {
    let Some(cg) = prerequisite(skip::require_root().and_then(|()| TestCgroup::create("dkr-h")))?
    else {
        return Ok(());
    };
    let Some(tools) = tools(&[Runtime::Docker])? else {
        return Ok(());
    };
    let v1 = V1Mirrors::of(&cg)?;
    let rt = Dockerd::start_with(&tools, Some(&docker_parent(&cg)))?;
    let (dir, daemon) = (rt.dir().to_path_buf(), rt.pid());
    let load = rt.load_image()?;
    eprintln!(
        "dockerd: started in {:?} (storage {}), image load {load:?}",
        rt.started_in(),
        rt.storage_driver()
    );

    let t0 = Instant::now();
    let name = format!("egret-h-{}", egret_e2e::unique_suffix());
    let c = rt.start_container(&RunSpec::new(&name, &["sleep", "60"]).label("app", "harness"))?;
    eprintln!("dockerd: detached container up in {:?}", t0.elapsed());
    let want = format!("{}/{}", docker_parent(&cg), c.id);
    check_placement(c.pid, &want, &cg)?;
    let v1_dirs = v1.existing();
    eprintln!("dockerd: cgroup v2 {want}; v1 copies: {v1_dirs:?}");
    let labels = rt
        .docker_cmd()
        .args([
            "inspect",
            "--format",
            "{{json .Config.Labels}} {{.Config.Image}} {{.Name}}",
            &c.id,
        ])
        .output()?;
    let labels = String::from_utf8_lossy(&labels.stdout);
    ensure!(
        labels.contains(r#""app":"harness""#)
            && labels.contains(IMAGE_REF)
            && labels.contains(&format!("/{name}")),
        "docker inspect: {labels}"
    );

    let server = TcpServer::loopback()?;
    let t0 = Instant::now();
    let name2 = format!("egret-h2-{}", egret_e2e::unique_suffix());
    let run = rt
        .run(
            &RunSpec::new(
                &name2,
                &[
                    "sh",
                    "-c",
                    &format!("cat /proc/self/cgroup; {}", connect(&target(server.addr()))),
                ],
            ),
            RUN_TIMEOUT,
        )?
        .ensure_success()?;
    eprintln!(
        "dockerd: run --rm (start, connect, exit) took {:?}",
        t0.elapsed()
    );
    wait_accepted(&server, 0)
        .with_context(|| format!("container output: {}\n{}", run.stdout, run.stderr))?;
    let want_once = format!("0::{}/{}", docker_parent(&cg), run.id);
    ensure!(
        run.stdout.lines().any(|l| l.trim() == want_once),
        "the container saw itself in another cgroup (want {want_once}):\n{}",
        run.stdout
    );

    let t0 = Instant::now();
    drop(rt);
    eprintln!("dockerd: teardown took {:?}", t0.elapsed());
    ensure!(!pid_alive(c.pid), "container process {} survived", c.pid);
    if let Some(p) = daemon {
        ensure!(!pid_alive(p), "dockerd {p} survived");
    }
    ensure!(!dir.exists(), "{} was not removed", dir.display());
    drop(cg);
    drop(v1);
    ensure!(
        v1_dirs.iter().all(|d| !d.exists()),
        "cgroup v1 copies left: {v1_dirs:?}"
    );
    Ok(())
}
