//! The crisp daemon: read the command line and config, set up logging, tighten the modes an
//! older crisp left, take the root's lock, recover sandboxes left by a previous run, then serve
//! CRI until SIGTERM/SIGINT.
//! Pods are left as they are on exit and found again on the next start.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use crisp::cni::{Cni, ConfDir, DEFAULT_SYSTEM_PATH};
use crisp::config::{Cli, Config, LogFormat, NriMode};
use crisp::modes;
use crisp::netns::NetnsDir;
use crisp::network::PodNetwork;
use crisp::nri::{Nri, NriConfig};
use crisp::sandbox::store::Store;
use crisp::sandbox::SandboxManager;
use crisp::server::{self, Shared};
use crisp::telemetry::{self, NriTelemetry, PluginTelemetry};

fn main() -> ExitCode {
    crisp::heap::limit_arenas();
    let config = match Config::resolve(Cli::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("crisp: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("crisp: --log-level {:?}: {e}", config.log_level);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crisp: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "crisp stopped");
            eprintln!("crisp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.try_init()?,
        LogFormat::Json => builder.json().flatten_event(true).try_init()?,
    }
    Ok(())
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Before the root and its lock are created, so a dir crisp never used is left as found.
    modes::tighten(&config.root);
    modes::create_dir_all(&config.root, modes::PRIVATE_DIR)
        .map_err(|e| format!("creating root dir {}: {e}", config.root.display()))?;
    let _lock = lock_root(&config.root)?;
    let store = Store::open(&config.root)?;
    if let Some(addr) = config.metrics_addr {
        telemetry::serve_metrics(addr)?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    }
    let plugins = Arc::new(PluginTelemetry::default());
    let network = pod_network(&config, plugins.clone());
    let mut manager = SandboxManager::new(store, NetnsDir::new(&config.netns_dir), network);
    let recovery = manager.recover().await?;
    // NRI before CRI: the plugin dir's plugins have registered (or failed) before kubelet
    // can create the first pod, and they are synchronized with every recovered one.
    let nri = match config.nri {
        NriMode::On => {
            let nri = start_nri(&config, manager.nri_pods()).await?;
            manager.set_nri(nri.clone());
            Some(nri)
        }
        NriMode::Off => None,
    };
    manager.start_network_tasks();
    let shutdown = shutdown_signal();
    let listener = crisp::socket::bind(&config.socket)?;
    tracing::info!(
        socket = %config.socket.display(), root = %config.root.display(),
        netns_dir = %config.netns_dir.display(), cni_conf_dir = %config.cni_conf_dir.display(),
        version = env!("CARGO_PKG_VERSION"), "crisp serving"
    );
    let socket = config.socket.clone();
    let shared = Arc::new(Shared {
        manager,
        config,
        recovery,
        plugin_timings: plugins,
    });
    start_background_tasks(&shared);
    // Connections queue on the bound socket from here on, so systemd may start kubelet.
    let notify_socket = std::env::var("NOTIFY_SOCKET").ok();
    if let Err(e) = crisp::systemd::notify_ready(notify_socket.as_deref()) {
        tracing::warn!(error = %e, "cannot tell systemd crisp is ready (NOTIFY_SOCKET)");
    }
    // A call in flight may be running a plugin: give it the plugin timeout to finish.
    let drain_limit = shared.config.cni_plugin_timeout + std::time::Duration::from_secs(5);
    server::serve(listener, shared, shutdown, drain_limit).await?;
    let _ = std::fs::remove_file(&socket);
    if let Some(nri) = nri {
        nri.shutdown().await;
    }
    tracing::info!("crisp stopped; sandboxes are kept for the next start");
    Ok(())
}

/// The CNI chain (plugin timings reported to `plugins`), the conf dir and the fast path.
fn pod_network(config: &Config, plugins: Arc<PluginTelemetry>) -> PodNetwork {
    let system_path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_SYSTEM_PATH.to_string());
    let cni = Cni::new(
        config.cni_bin_dirs.clone(),
        config.cni_plugin_timeout,
        config.root.join("cni").join("results"),
        system_path.clone(),
    )
    .with_observer(plugins);
    PodNetwork::with_fast_path(
        cni,
        ConfDir::new(&config.cni_conf_dir),
        config.cni_fast_path,
        system_path,
    )
}

/// The GC pass and, when configured, the network checker: off every call's path.
fn start_background_tasks(shared: &Arc<Shared>) {
    tokio::spawn(collect_garbage(shared.clone()));
    if let Some(every) = shared.config.cni_check_interval {
        let shared = shared.clone();
        tokio::spawn(async move { crisp::sandbox::checker::run(&shared.manager, every).await });
    }
}

async fn start_nri(
    config: &Config,
    pods: Vec<(crisp::nri::PodSandbox, bool)>,
) -> Result<Arc<Nri>, crisp::Error> {
    let nri_config = NriConfig {
        socket: config.nri_socket.clone(),
        plugin_dir: config.nri_plugin_dir.clone(),
        plugin_config_dir: config.nri_plugin_config_dir.clone(),
        timeouts: crisp::nri::Timeouts {
            registration: config.nri_registration_timeout,
            request: config.nri_request_timeout,
        },
        started_record: config.root.join("nri-plugins.json"),
    };
    let runtime = crisp::nri::Runtime {
        name: "crisp".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    Nri::start(nri_config, runtime, Arc::new(NriTelemetry), pods).await
}

/// CNI GC right after start-up (recovery has settled which sandboxes exist), then on a timer.
async fn collect_garbage(shared: Arc<Shared>) {
    loop {
        shared.manager.collect_garbage().await;
        match shared.config.cni_gc_interval {
            Some(every) => tokio::time::sleep(every).await,
            None => return,
        }
    }
}

/// One crisp per root: an exclusive lock on `<root>/crisp.lock`, which also holds the pid.
///
/// A POSIX record lock (fcntl), not flock: a flock belongs to the open file and is shared by
/// every process forked from crisp until it execs, so a plugin being spawned at the instant
/// crisp is killed kept the root locked. A record lock belongs to the process alone and is
/// released when it dies.
fn lock_root(root: &Path) -> Result<std::fs::File, String> {
    use nix::fcntl::{fcntl, FcntlArg};
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join("crisp.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(modes::PRIVATE_FILE)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let whole_file = |kind: libc::c_short| libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(
        &file,
        FcntlArg::F_SETLK(&whole_file(libc::F_WRLCK as libc::c_short)),
    ) {
        Ok(_) => {
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(errno) => {
            let mut holder = whole_file(libc::F_WRLCK as libc::c_short);
            let pid = match fcntl(&file, FcntlArg::F_GETLK(&mut holder)) {
                Ok(_) if holder.l_type != libc::F_UNLCK as libc::c_short => {
                    holder.l_pid.to_string()
                }
                _ => "unknown".to_string(),
            };
            Err(format!(
                "another crisp (pid {pid}) already uses root {} (lock {}: {errno})",
                root.display(),
                path.display()
            ))
        }
    }
}

/// Installs the SIGTERM/SIGINT handlers now, and returns the future that ends at the first
/// signal. Installed before the socket is bound: a client that got an answer may send SIGTERM
/// at once, and a handler installed only when serve first polls would miss it (the default
/// action kills crisp without draining).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop crisp with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight calls"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight calls"),
        }
    }
}
