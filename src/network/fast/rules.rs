//! The bridge plugin's ipMasq rules and portmap's DNAT rules (containernetworking/plugins
//! v1.1.1 `pkg/ip/ipmasq_linux.go`, `plugins/meta/portmap/portmap.go` + `chain.go`), with the
//! plugins' chain names, comments, argument order and rule order, installed in ONE
//! `iptables-restore -w --noflush` per address family.
//!
//! Why iptables-restore and not nftables over netlink: the plugins write through iptables
//! (nft backend here), and the state must be exactly theirs so that an exec'd DEL can remove
//! what the fast path added and vice versa; rules written natively in nft would be foreign
//! to `iptables -D`. One restore is one process start instead of the plugins' 6–20
//! iptables execs, and is atomic.
//!
//! The shared portmap chains (`CNI-HOSTPORT-*`) are created only when missing, like the
//! plugin's `EnsureChain`/`InsertUnique`: for that the nat table is read once
//! (`iptables-save -t nat`) per ADD that publishes ports.
//!
//! Every tool it runs gets a clean environment and [`TOOL_TIMEOUT`], past which it is killed
//! and reaped. It never opens a netlink socket.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const MAX_CHAIN_LENGTH: usize = 28;
pub const TOP_DNAT: &str = "CNI-HOSTPORT-DNAT";
pub const SETMARK: &str = "CNI-HOSTPORT-SETMARK";
pub const MASQ: &str = "CNI-HOSTPORT-MASQ";
pub const DEFAULT_MARK_BIT: u32 = 13;

/// `utils.MustFormatChainNameWithPrefix`: "CNI-" + prefix + hex(sha512(name + id)), cut to 28.
pub fn chain_name(network: &str, id: &str, prefix: &str) -> String {
    let digest = Sha512::digest(format!("{network}{id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut name = format!("CNI-{prefix}{hex}");
    name.truncate(MAX_CHAIN_LENGTH);
    name
}

/// `utils.FormatComment`: Go's %q of both.
pub fn masq_comment(network: &str, id: &str) -> String {
    format!("name: {} id: {}", go_quote(network), go_quote(id))
}

/// Go's `%q` for the strings CNI allows in names and ids (letters, digits, `_.-`).
fn go_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A string as one iptables-restore word (the restore parser honours double quotes).
fn word(s: &str) -> String {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

fn line(op: &str, chain: &str, args: &[String]) -> String {
    let mut out = format!("{op} {chain}");
    for a in args {
        out.push(' ');
        out.push_str(&word(a));
    }
    out
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `args` then ipMasq's comment match, in the order the bridge plugin writes them.
fn commented(args: &[&str], comment: &str) -> Vec<String> {
    let mut out = s(args);
    out.extend(s(&["-m", "comment", "--comment", comment]));
    out
}

/// One published port, as portmap reads it from `runtimeConfig.portMappings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMap {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
}

/// The portmap settings the fast path implements (defaults of the plugin otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortmapConf {
    pub snat: bool,
    pub mark_bit: u32,
}

/// portmap's per-pod chain: its name, its rules, the entry rules that jump to it.
type DnatRules = (String, Vec<Vec<String>>, Vec<Vec<String>>);

/// What a pod needs in one family's nat table.
#[derive(Debug, Clone)]
pub struct PodRules {
    pub network: String,
    pub container_id: String,
    pub v6: bool,
    /// ipMasq: every pod address of this family with its prefix (`10.88.0.2/16`).
    pub masq: Vec<(IpAddr, u8)>,
    /// portmap: its settings, the mappings, and the pod address of this family it targets.
    pub ports: Option<(PortmapConf, Vec<PortMap>, IpAddr, u8)>,
}

impl PodRules {
    fn masq_chain(&self) -> String {
        chain_name(&self.network, &self.container_id, "")
    }

    fn dn_chain(&self) -> String {
        chain_name(&self.network, &self.container_id, "DN-")
    }

    /// ipMasq: the per-pod chain's rules and POSTROUTING's jumps, SetupIPMasq per address
    /// with its AppendUnique (a second address adds only what is new).
    fn masq_rules(&self) -> (String, Vec<String>, Vec<String>) {
        let chain = self.masq_chain();
        let comment = masq_comment(&self.network, &self.container_id);
        let multicast = if self.v6 { "ff00::/8" } else { "224.0.0.0/4" };
        let mut rules: Vec<String> = Vec::new();
        let mut jumps: Vec<String> = Vec::new();
        let push_unique = |v: &mut Vec<String>, l: String| {
            if !v.contains(&l) {
                v.push(l);
            }
        };
        for (addr, prefix) in &self.masq {
            let cidr = format!("{addr}/{prefix}");
            let accept = commented(&["-d", &cidr, "-j", "ACCEPT"], &comment);
            push_unique(&mut rules, line("-A", &chain, &accept));
            let masquerade = commented(&["!", "-d", multicast, "-j", "MASQUERADE"], &comment);
            push_unique(&mut rules, line("-A", &chain, &masquerade));
            let jump = commented(&["-s", &addr.to_string(), "-j", &chain], &comment);
            push_unique(&mut jumps, line("-A", "POSTROUTING", &jump));
        }
        (chain, rules, jumps)
    }

    /// portmap's DN chain: its rules and the entry rules in CNI-HOSTPORT-DNAT
    /// (`fillDnatRules`), or `None` when no mapping is published.
    fn dnat_rules(&self) -> Option<DnatRules> {
        let (conf, maps, addr, prefix) = self.ports.as_ref()?;
        if maps.is_empty() {
            return None;
        }
        let chain = self.dn_chain();
        let comment = trim_comment(&format!(
            "dnat name: \"{}\" id: \"{}\"",
            self.network, self.container_id
        ));
        let entries = dnat_entries(maps, &comment, &chain);
        let container = format!("{addr}/{prefix}");
        let rules = maps
            .iter()
            .flat_map(|m| self.mapping_rules(conf, m, *addr, &container))
            .collect();
        Some((chain, rules, entries))
    }

    /// One mapping's rules in the DN chain: with SNAT the hairpin mark (and, for IPv4, the
    /// localhost mark), then the DNAT to the pod; none when its host IP is of the other
    /// family.
    fn mapping_rules(
        &self,
        conf: &PortmapConf,
        m: &PortMap,
        addr: IpAddr,
        container: &str,
    ) -> Vec<Vec<String>> {
        let v6 = self.v6;
        let mut base = s(&["-p", &m.protocol, "--dport", &m.host_port.to_string()]);
        if !m.host_ip.is_empty() {
            // Go's net.ParseIP of a bad string gives nil, which counts as IPv6 there.
            let host = m.host_ip.parse::<IpAddr>().ok();
            let host_v6 = host.is_none_or(|h| h.is_ipv6());
            if host_v6 != v6 {
                return Vec::new();
            }
            if host.is_some_and(|h| !h.is_unspecified()) {
                base.extend(s(&["-d", &m.host_ip]));
            }
        }
        let mut rules = Vec::new();
        if conf.snat {
            let mut hairpin = base.clone();
            hairpin.extend(s(&["-s", container, "-j", SETMARK]));
            rules.push(hairpin);
            if !v6 {
                let mut local = base.clone();
                local.extend(s(&["-s", "127.0.0.1", "-j", SETMARK]));
                rules.push(local);
            }
        }
        let to = if v6 {
            format!("[{addr}]:{}", m.container_port)
        } else {
            format!("{addr}:{}", m.container_port)
        };
        let mut dnat = base;
        dnat.extend(s(&["-j", "DNAT", "--to-destination", &to]));
        rules.push(dnat);
        rules
    }

    /// The restore batch for ADD. `nat` is the current `iptables-save -t nat` (needed only
    /// when ports are published, to create the shared chains exactly once).
    pub fn add_batch(&self, nat: Option<&str>) -> String {
        let mut decls = Vec::new();
        let mut body = Vec::new();
        if !self.masq.is_empty() {
            let (chain, rules, jumps) = self.masq_rules();
            decls.push(format!(":{chain} - [0:0]"));
            body.extend(rules);
            body.extend(jumps);
        }
        if let (Some((chain, rules, entries)), Some((conf, ..))) =
            (self.dnat_rules(), self.ports.as_ref())
        {
            let nat = nat.unwrap_or("");
            if conf.snat {
                ensure_snat_chains(nat, conf.mark_bit, &mut decls, &mut body);
            }
            ensure_dnat_chain(nat, &mut decls, &mut body);
            decls.push(format!(":{chain} - [0:0]"));
            for r in rules {
                body.push(line("-A", &chain, &r));
            }
            for e in entries {
                body.push(line("-A", TOP_DNAT, &e));
            }
        }
        batch(decls, body)
    }

    /// The restore batch for DEL when everything ADD installed is still there.
    pub fn del_batch(&self) -> String {
        let mut body = Vec::new();
        if !self.masq.is_empty() {
            let (chain, _, jumps) = self.masq_rules();
            for jump in jumps {
                body.push(jump.replacen("-A ", "-D ", 1));
            }
            body.push(format!("-F {chain}"));
            body.push(format!("-X {chain}"));
        }
        if let Some((chain, _, entries)) = self.dnat_rules() {
            for e in entries {
                body.push(line("-D", TOP_DNAT, &e));
            }
            body.push(format!("-F {chain}"));
            body.push(format!("-X {chain}"));
        }
        batch(Vec::new(), body)
    }

    /// Whether this pod needs anything in the nat table at all.
    pub fn is_empty(&self) -> bool {
        self.masq.is_empty() && self.dnat_rules().is_none()
    }

    /// Whether ADD needs to see the nat table first (to create shared chains once).
    pub fn needs_current(&self) -> bool {
        self.dnat_rules().is_some()
    }
}

/// portmap's entry rules into a pod's DN chain: multiport per protocol in sorted order, 15
/// ports per rule.
fn dnat_entries(maps: &[PortMap], comment: &str, chain: &str) -> Vec<Vec<String>> {
    let mut protos: Vec<&str> = maps.iter().map(|m| m.protocol.as_str()).collect();
    protos.sort_unstable();
    protos.dedup();
    let mut entries = Vec::new();
    for proto in protos {
        let ports: Vec<String> = maps
            .iter()
            .filter(|m| m.protocol == proto)
            .map(|m| m.host_port.to_string())
            .collect();
        for chunk in ports.chunks(15) {
            entries.push(s(&[
                "-m",
                "comment",
                "--comment",
                comment,
                "-m",
                "multiport",
                "-p",
                proto,
                "--destination-ports",
                &chunk.join(","),
                "-j",
                chain,
            ]));
        }
    }
    entries
}

/// portmap's shared SNAT chains, as its `EnsureChain`/`InsertUnique` leave them: SETMARK
/// marking with `mark_bit`, MASQ masquerading what is marked, and POSTROUTING's jump to
/// MASQ first; each chain and rule is added only when `nat` lacks it.
fn ensure_snat_chains(nat: &str, mark_bit: u32, decls: &mut Vec<String>, body: &mut Vec<String>) {
    let mark = 1u32 << mark_bit;
    let mark_def = format!("{mark:#x}/{mark:#x}");
    if !has_chain(nat, SETMARK) {
        decls.push(format!(":{SETMARK} - [0:0]"));
    }
    if !nat
        .lines()
        .any(|l| l.starts_with(&format!("-A {SETMARK} ")) && l.contains("--set-xmark"))
    {
        body.push(line(
            "-A",
            SETMARK,
            &s(&[
                "-m",
                "comment",
                "--comment",
                "CNI portfwd masquerade mark",
                "-j",
                "MARK",
                "--set-xmark",
                &mark_def,
            ]),
        ));
    }
    if !has_chain(nat, MASQ) {
        decls.push(format!(":{MASQ} - [0:0]"));
    }
    if !nat
        .lines()
        .any(|l| l.starts_with(&format!("-A {MASQ} ")) && l.contains(&mark_def))
    {
        body.push(line(
            "-A",
            MASQ,
            &s(&["-m", "mark", "--mark", &mark_def, "-j", "MASQUERADE"]),
        ));
    }
    if !nat
        .lines()
        .any(|l| l.starts_with("-A POSTROUTING ") && l.ends_with(&format!("-j {MASQ}")))
    {
        body.push(line(
            "-I",
            "POSTROUTING",
            &s(&[
                "1",
                "-m",
                "comment",
                "--comment",
                "CNI portfwd requiring masquerade",
                "-j",
                MASQ,
            ]),
        ));
    }
}

/// portmap's shared DNAT chain and the PREROUTING and OUTPUT jumps to it for local
/// destinations, each added only when `nat` lacks it.
fn ensure_dnat_chain(nat: &str, decls: &mut Vec<String>, body: &mut Vec<String>) {
    if !has_chain(nat, TOP_DNAT) {
        decls.push(format!(":{TOP_DNAT} - [0:0]"));
    }
    for entry in ["PREROUTING", "OUTPUT"] {
        let present = nat.lines().any(|l| {
            l.starts_with(&format!("-A {entry} "))
                && l.contains("--dst-type LOCAL")
                && l.ends_with(&format!("-j {TOP_DNAT}"))
        });
        if !present {
            body.push(line(
                "-A",
                entry,
                &s(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", TOP_DNAT]),
            ));
        }
    }
}

/// The DEL batch computed from the live table, for when the exact batch failed (a rule
/// or chain already gone): every rule jumping to one of `chains` (as the plugins'
/// teardowns find them: rules ending in `-j <chain>`), then flush and delete each chain
/// that exists.
pub fn reconcile_del_batch(nat: &str, chains: &[String]) -> String {
    let mut body = Vec::new();
    for l in nat.lines() {
        if l.starts_with("-A ") && chains.iter().any(|c| l.ends_with(&format!("-j {c}"))) {
            body.push(l.replacen("-A ", "-D ", 1));
        }
    }
    for c in chains {
        if has_chain(nat, c) {
            body.push(format!("-F {c}"));
            body.push(format!("-X {c}"));
        }
    }
    batch(Vec::new(), body)
}

/// The per-pod chains of a container on a network (ipMasq's and portmap's).
pub fn pod_chains(network: &str, id: &str) -> Vec<String> {
    vec![chain_name(network, id, ""), chain_name(network, id, "DN-")]
}

fn has_chain(nat: &str, chain: &str) -> bool {
    nat.lines()
        .any(|l| l.strip_prefix(':').and_then(|r| r.split(' ').next()) == Some(chain))
}

fn batch(decls: Vec<String>, body: Vec<String>) -> String {
    if decls.is_empty() && body.is_empty() {
        return String::new();
    }
    let mut out = String::from("*nat\n");
    for l in decls.into_iter().chain(body) {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

fn trim_comment(val: &str) -> String {
    if val.len() <= 255 {
        val.to_string()
    } else {
        format!("{}...", &val[..253])
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{program} {action}: {reason}")]
pub struct IptablesError {
    pub program: &'static str,
    pub action: &'static str,
    pub reason: String,
}

fn programs(v6: bool) -> (&'static str, &'static str) {
    if v6 {
        ("ip6tables-restore", "ip6tables-save")
    } else {
        ("iptables-restore", "iptables-save")
    }
}

/// How long one iptables tool may run before it is killed. These run while the sandbox lock
/// and the GC gate are held, so a wedged tool must not hold them forever. `-w` makes
/// restore wait for the xtables lock for as long as another writer holds it (kube-proxy's
/// or the plugins' restores are short); 10 s leaves that wait ample room and still frees
/// the lock if the tool hangs.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one iptables tool with a clean environment (only `PATH`), feeding `stdin` when given
/// and capturing stdout and stderr. Past `timeout` the child is killed and reaped, and the
/// result is an `IptablesError` that says it timed out.
async fn run_tool(
    program: &'static str,
    args: &[&str],
    stdin: Option<&[u8]>,
    path_env: &str,
    timeout: Duration,
) -> Result<std::process::Output, IptablesError> {
    let tool_error = |action: &'static str, reason: String| IptablesError {
        program,
        action,
        reason,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", path_env)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| tool_error("could not run", e.to_string()))?;
    let (input, mut out, mut err) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let finished = tokio::time::timeout(timeout, async {
        let feed = async {
            if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
                pipe.write_all(bytes).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let (fed, stdout, stderr) = tokio::join!(feed, read_all(&mut out), read_all(&mut err));
        fed.map_err(|e| tool_error("could not be fed", e.to_string()))?;
        let status = child
            .wait()
            .await
            .map_err(|e| tool_error("did not finish", e.to_string()))?;
        Ok(std::process::Output {
            status,
            stdout: stdout.map_err(|e| tool_error("could not be read", e.to_string()))?,
            stderr: stderr.map_err(|e| tool_error("could not be read", e.to_string()))?,
        })
    })
    .await;
    match finished {
        Ok(result) => result,
        Err(_) => {
            // kill() also waits, so the child is reaped before the error is returned.
            let _ = child.kill().await;
            Err(tool_error("timed out", format!("killed after {timeout:?}")))
        }
    }
}

async fn read_all<R: AsyncRead + Unpin>(pipe: &mut Option<R>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        pipe.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// A tool's non-zero exit as an error carrying its status and stderr.
fn check_status(
    program: &'static str,
    out: std::process::Output,
) -> Result<std::process::Output, IptablesError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(IptablesError {
        program,
        action: "failed",
        reason: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Whether the family's `iptables-restore` is the nf_tables variant (`-V` says
/// `(nf_tables)`), so its rules can be read and deleted over nf_tables netlink.
pub async fn is_nf_tables(v6: bool, path_env: &str) -> bool {
    run_tool(programs(v6).0, &["-V"], None, path_env, TOOL_TIMEOUT)
        .await
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("(nf_tables)")
        })
}

/// `iptables-save -t nat` for one family.
pub async fn save_nat(v6: bool, path_env: &str) -> Result<String, IptablesError> {
    save_nat_within(v6, path_env, TOOL_TIMEOUT).await
}

/// [`save_nat`] with its timeout given (the tests use a short one).
pub(crate) async fn save_nat_within(
    v6: bool,
    path_env: &str,
    timeout: Duration,
) -> Result<String, IptablesError> {
    let program = programs(v6).1;
    let out = run_tool(program, &["-t", "nat"], None, path_env, timeout).await?;
    let out = check_status(program, out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Feeds one batch to `iptables-restore -w --noflush`.
pub async fn restore(v6: bool, batch: &str, path_env: &str) -> Result<(), IptablesError> {
    restore_within(v6, batch, path_env, TOOL_TIMEOUT).await
}

/// [`restore`] with its timeout given (the tests use a short one).
pub(crate) async fn restore_within(
    v6: bool,
    batch: &str,
    path_env: &str,
    timeout: Duration,
) -> Result<(), IptablesError> {
    if batch.is_empty() {
        return Ok(());
    }
    let program = programs(v6).0;
    let args = ["-w", "--noflush"];
    let out = run_tool(program, &args, Some(batch.as_bytes()), path_env, timeout).await?;
    check_status(program, out).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_and_comments_are_the_plugins() {
        // sha512("probeabc") starts 52f507b0bb31fab882c8b2b7... (checked against the
        // bridge and portmap plugins' chains for network "probe", container "abc").
        assert_eq!(
            chain_name("probe", "abc", ""),
            "CNI-52f507b0bb31fab882c8b2b7"
        );
        assert_eq!(
            chain_name("probe", "abc", "DN-"),
            "CNI-DN-52f507b0bb31fab882c8b"
        );
        assert_eq!(masq_comment("probe", "abc"), "name: \"probe\" id: \"abc\"");
    }

    #[test]
    fn del_batch_mirrors_add() {
        let rules = PodRules {
            network: "n".into(),
            container_id: "c".into(),
            v6: false,
            masq: vec![("10.1.0.2".parse().expect("ip"), 24)],
            ports: Some((
                PortmapConf {
                    snat: true,
                    mark_bit: 13,
                },
                vec![PortMap {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                }],
                "10.1.0.2".parse().expect("ip"),
                24,
            )),
        };
        let add = rules.add_batch(Some(""));
        assert!(add.contains(":CNI-HOSTPORT-DNAT - [0:0]"), "{add}");
        let masq_jump =
            "-I POSTROUTING 1 -m comment --comment \"CNI portfwd requiring masquerade\" \
                         -j CNI-HOSTPORT-MASQ";
        assert!(add.contains(masq_jump), "{add}");
        let del = rules.del_batch();
        assert!(del.contains("-D POSTROUTING -s 10.1.0.2 -j CNI-"), "{del}");
        assert!(del.contains("-X CNI-DN-"), "{del}");
    }

    /// A stand-in iptables tool `name` that records its pid and then hangs.
    fn hanging_tool(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let pid_file = dir.join("pid");
        let script = dir.join(name);
        let body = format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 1000\n",
            pid_file.display()
        );
        crate::test_scripts::write_executable(&script, &body);
        pid_file
    }

    /// Runs `call` (given a PATH and a short timeout) against a hanging stand-in `tool`: it
    /// must fail as timed out, and the stand-in must be killed and reaped.
    async fn assert_hanging_tool_is_killed<T, Fut>(tool: &str, call: impl FnOnce(String) -> Fut)
    where
        T: std::fmt::Debug,
        Fut: std::future::Future<Output = Result<T, IptablesError>>,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = hanging_tool(dir.path(), tool);
        let path_env = format!("{}:/usr/bin:/bin", dir.path().display());
        let err = call(path_env).await.expect_err("a hanging tool must fail");
        assert!(err.to_string().contains("timed out"), "{err}");
        let pid = std::fs::read_to_string(&pid_file).expect("pid written");
        let proc_dir = format!("/proc/{}", pid.trim());
        for _ in 0..50 {
            if !std::path::Path::new(&proc_dir).exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{proc_dir} still exists: the tool was not killed and reaped");
    }

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_hanging_restore_is_killed_and_reaped() {
        assert_hanging_tool_is_killed("iptables-restore", |path_env| async move {
            restore_within(false, "*nat\nCOMMIT\n", &path_env, SHORT).await
        })
        .await;
    }

    #[tokio::test]
    async fn a_hanging_save_is_killed_and_reaped() {
        assert_hanging_tool_is_killed("iptables-save", |path_env| async move {
            save_nat_within(false, &path_env, SHORT).await
        })
        .await;
    }
}
