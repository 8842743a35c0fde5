//! crisp's configuration: command-line flags (each with an environment variable) over a
//! TOML file over built-in defaults, checked once into a [`Config`]. argv and the environment
//! are read only in `main` (through [`Cli`]); everything else takes a finished [`Config`].
//! It reads the config file and nothing else: whether the directories exist is for the
//! modules that use them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_SOCKET: &str = "/run/crisp/crisp.sock";
pub const DEFAULT_ROOT: &str = "/var/lib/crisp";
pub const DEFAULT_NETNS_DIR: &str = "/run/netns";
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin:/usr/lib/cni";
pub const DEFAULT_CNI_PLUGIN_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_CNI_GC_INTERVAL_SECS: u64 = 600;
pub const DEFAULT_CNI_CHECK_INTERVAL_SECS: u64 = 60;
pub const DEFAULT_NRI_SOCKET: &str = "/var/run/nri/nri.sock";
pub const DEFAULT_NRI_PLUGIN_DIR: &str = "/opt/nri/plugins";
pub const DEFAULT_NRI_PLUGIN_CONFIG_DIR: &str = "/etc/nri/conf.d";
/// NRI's own defaults (containerd/nri pkg/api/timeouts.go).
pub const DEFAULT_NRI_REGISTRATION_TIMEOUT_SECS: u64 = 5;
pub const DEFAULT_NRI_REQUEST_TIMEOUT_SECS: u64 = 2;

/// The command line. Every value is optional here so that a value given nowhere can fall
/// back to the config file, then to the default (flags > env > file > defaults).
#[derive(Debug, Parser, Default)]
#[command(
    name = "crisp",
    version,
    about = "A Kubernetes CRI runtime for pod sandboxes"
)]
pub struct Cli {
    /// Unix socket to serve CRI on [default: /run/crisp/crisp.sock]
    #[arg(long, env = "CRISP_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// State directory: sandbox records and the CNI result cache [default: /var/lib/crisp]
    #[arg(long, env = "CRISP_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where pod network namespaces are pinned [default: /run/netns]
    #[arg(long, env = "CRISP_NETNS_DIR", value_name = "DIR")]
    pub netns_dir: Option<PathBuf>,
    /// CNI network configuration directory [default: /etc/cni/net.d]
    #[arg(long, env = "CRISP_CNI_CONF_DIR", value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directories, colon-separated, searched in order
    /// [default: /opt/cni/bin:/usr/lib/cni]
    #[arg(long, env = "CRISP_CNI_BIN_DIR", value_name = "DIRS")]
    pub cni_bin_dir: Option<String>,
    /// Seconds a CNI plugin may run before its process group is killed [default: 60]
    #[arg(long, env = "CRISP_CNI_PLUGIN_TIMEOUT", value_name = "SECS")]
    pub cni_plugin_timeout: Option<u64>,
    /// Seconds between CNI GC passes (one also runs right after start-up); 0 = only at start
    /// [default: 600]
    #[arg(long, env = "CRISP_CNI_GC_INTERVAL", value_name = "SECS")]
    pub cni_gc_interval: Option<u64>,
    /// Seconds between background network checks of READY pods (CNI CHECK, and that the
    /// namespace and the pod's addresses are still there); 0 = no checks [default: 60]
    #[arg(long, env = "CRISP_CNI_CHECK_INTERVAL", value_name = "SECS")]
    pub cni_check_interval: Option<u64>,
    /// The cgroup driver RuntimeConfig reports to kubelet (which then uses it instead of
    /// its own cgroupDriver); unset, kubelet keeps its own [default: unset]
    #[arg(long, env = "CRISP_CGROUP_DRIVER", value_name = "DRIVER")]
    pub cgroup_driver: Option<CgroupDriver>,
    /// Run the default bridge + host-local (+ portmap) network in process instead of
    /// exec'ing the plugins, when the loaded network list is one crisp implements
    /// completely (same end state; see docs/fastpath.md) [default: off]
    #[arg(long, env = "CRISP_CNI_FAST_PATH", value_name = "MODE")]
    pub cni_fast_path: Option<FastPathMode>,
    /// NRI: let node plugins hook every pod's Run, Stop and Remove (docs/nri.md) [default: off]
    #[arg(long, env = "CRISP_NRI", value_name = "MODE")]
    pub nri: Option<NriMode>,
    /// Unix socket external NRI plugins connect to [default: /var/run/nri/nri.sock]
    #[arg(long, env = "CRISP_NRI_SOCKET", value_name = "PATH")]
    pub nri_socket: Option<PathBuf>,
    /// Pre-registered NRI plugins (IDX-NAME executables) to start [default: /opt/nri/plugins]
    #[arg(long, env = "CRISP_NRI_PLUGIN_DIR", value_name = "DIR")]
    pub nri_plugin_dir: Option<PathBuf>,
    /// Configs of pre-registered plugins: IDX-NAME.conf, else NAME.conf [default: /etc/nri/conf.d]
    #[arg(long, env = "CRISP_NRI_PLUGIN_CONFIG_DIR", value_name = "DIR")]
    pub nri_plugin_config_dir: Option<PathBuf>,
    /// Seconds an NRI plugin has to register after it connects or is started [default: 5]
    #[arg(long, env = "CRISP_NRI_REGISTRATION_TIMEOUT", value_name = "SECS")]
    pub nri_registration_timeout: Option<u64>,
    /// Seconds an NRI plugin has to answer one request before it is disconnected [default: 2]
    #[arg(long, env = "CRISP_NRI_REQUEST_TIMEOUT", value_name = "SECS")]
    pub nri_request_timeout: Option<u64>,
    /// TOML file with the same keys as the flags (e.g. `cni-conf-dir = "/etc/cni/net.d"`)
    #[arg(long, env = "CRISP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info]
    #[arg(long, env = "CRISP_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format [default: text]
    #[arg(long, env = "CRISP_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics over HTTP on this address, e.g. 127.0.0.1:9325 [default: off]
    #[arg(long, env = "CRISP_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A cgroup driver, as RuntimeConfig names it to kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// Whether the in-process CNI fast path may be used.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FastPathMode {
    /// Always exec the plugins.
    #[default]
    Off,
    /// Use the fast path for network lists it implements completely, exec for the rest.
    Auto,
}

/// Whether NRI is served.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NriMode {
    /// No NRI socket, no plugins (the default until NRI has been proven in a release).
    #[default]
    Off,
    On,
}

/// The config file: the flags' names as keys, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    root: Option<PathBuf>,
    netns_dir: Option<PathBuf>,
    cni_conf_dir: Option<PathBuf>,
    cni_bin_dir: Option<String>,
    cni_plugin_timeout: Option<u64>,
    cni_gc_interval: Option<u64>,
    cni_check_interval: Option<u64>,
    cgroup_driver: Option<CgroupDriver>,
    cni_fast_path: Option<FastPathMode>,
    nri: Option<NriMode>,
    nri_socket: Option<PathBuf>,
    nri_plugin_dir: Option<PathBuf>,
    nri_plugin_config_dir: Option<PathBuf>,
    nri_registration_timeout: Option<u64>,
    nri_request_timeout: Option<u64>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    metrics_addr: Option<SocketAddr>,
}

/// The effective configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub netns_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    #[serde(serialize_with = "as_secs")]
    pub cni_plugin_timeout: Duration,
    /// `None`: GC only once, after start-up.
    #[serde(serialize_with = "opt_as_secs")]
    pub cni_gc_interval: Option<Duration>,
    /// `None`: the background network checker is off.
    #[serde(serialize_with = "opt_as_secs")]
    pub cni_check_interval: Option<Duration>,
    /// What RuntimeConfig answers; `None` leaves kubelet's own setting in force.
    pub cgroup_driver: Option<CgroupDriver>,
    pub cni_fast_path: FastPathMode,
    pub nri: NriMode,
    pub nri_socket: PathBuf,
    pub nri_plugin_dir: PathBuf,
    pub nri_plugin_config_dir: PathBuf,
    #[serde(serialize_with = "as_secs")]
    pub nri_registration_timeout: Duration,
    #[serde(serialize_with = "as_secs")]
    pub nri_request_timeout: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Where `/metrics` is served; `None` means metrics are off.
    pub metrics_addr: Option<SocketAddr>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
}

fn opt_as_secs<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.map_or(0, |d| d.as_secs()))
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Merges the command line over the config file (if one is named) over the defaults.
    pub fn resolve(cli: Cli) -> Result<Config, ConfigError> {
        let file = cli.config.as_deref().map(read_file).transpose()?;
        let file = file.unwrap_or_default();
        let cni_bin_dirs = cni_bin_dirs(cli.cni_bin_dir.or(file.cni_bin_dir))?;
        let cni_plugin_timeout = at_least_one_second(
            "cni-plugin-timeout",
            cli.cni_plugin_timeout.or(file.cni_plugin_timeout),
            DEFAULT_CNI_PLUGIN_TIMEOUT_SECS,
        )?;
        let nri_registration_timeout = at_least_one_second(
            "nri-registration-timeout",
            cli.nri_registration_timeout
                .or(file.nri_registration_timeout),
            DEFAULT_NRI_REGISTRATION_TIMEOUT_SECS,
        )?;
        let nri_request_timeout = at_least_one_second(
            "nri-request-timeout",
            cli.nri_request_timeout.or(file.nri_request_timeout),
            DEFAULT_NRI_REQUEST_TIMEOUT_SECS,
        )?;
        Ok(Config {
            socket: path_or(cli.socket, file.socket, DEFAULT_SOCKET),
            root: path_or(cli.root, file.root, DEFAULT_ROOT),
            netns_dir: path_or(cli.netns_dir, file.netns_dir, DEFAULT_NETNS_DIR),
            cni_conf_dir: path_or(cli.cni_conf_dir, file.cni_conf_dir, DEFAULT_CNI_CONF_DIR),
            cni_bin_dirs,
            cni_plugin_timeout,
            cni_gc_interval: interval(
                cli.cni_gc_interval.or(file.cni_gc_interval),
                DEFAULT_CNI_GC_INTERVAL_SECS,
            ),
            cni_check_interval: interval(
                cli.cni_check_interval.or(file.cni_check_interval),
                DEFAULT_CNI_CHECK_INTERVAL_SECS,
            ),
            cgroup_driver: cli.cgroup_driver.or(file.cgroup_driver),
            cni_fast_path: cli.cni_fast_path.or(file.cni_fast_path).unwrap_or_default(),
            nri: cli.nri.or(file.nri).unwrap_or_default(),
            nri_socket: path_or(cli.nri_socket, file.nri_socket, DEFAULT_NRI_SOCKET),
            nri_plugin_dir: path_or(
                cli.nri_plugin_dir,
                file.nri_plugin_dir,
                DEFAULT_NRI_PLUGIN_DIR,
            ),
            nri_plugin_config_dir: path_or(
                cli.nri_plugin_config_dir,
                file.nri_plugin_config_dir,
                DEFAULT_NRI_PLUGIN_CONFIG_DIR,
            ),
            nri_registration_timeout,
            nri_request_timeout,
            log_level: cli
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            metrics_addr: cli.metrics_addr.or(file.metrics_addr),
            config_file: cli.config,
        })
    }
}

/// The flag's path, else the file's, else the default.
fn path_or(flag: Option<PathBuf>, file: Option<PathBuf>, default: &str) -> PathBuf {
    flag.or(file).unwrap_or_else(|| default.into())
}

/// The plugin search path: colon-separated, empty entries skipped, at least one directory.
fn cni_bin_dirs(given: Option<String>) -> Result<Vec<PathBuf>, ConfigError> {
    let bin_dirs = given.unwrap_or_else(|| DEFAULT_CNI_BIN_DIR.to_string());
    let cni_bin_dirs: Vec<PathBuf> = std::env::split_paths(&bin_dirs)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    if cni_bin_dirs.is_empty() {
        return Err(ConfigError::Invalid {
            key: "cni-bin-dir",
            reason: "no directory given".into(),
        });
    }
    Ok(cni_bin_dirs)
}

/// A timeout in seconds: 0 would fail every call at once, so it is refused.
fn at_least_one_second(
    key: &'static str,
    given: Option<u64>,
    default: u64,
) -> Result<Duration, ConfigError> {
    match given {
        Some(0) => Err(ConfigError::Invalid {
            key,
            reason: "must be at least 1 second".into(),
        }),
        secs => Ok(Duration::from_secs(secs.unwrap_or(default))),
    }
}

/// A period in seconds, where 0 means "never" (`None`).
fn interval(given: Option<u64>, default: u64) -> Option<Duration> {
    Some(given.unwrap_or(default))
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let config = Config::resolve(Cli::default()).expect("defaults resolve");
        assert_eq!(config.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(config.netns_dir, PathBuf::from(DEFAULT_NETNS_DIR));
        assert_eq!(
            config.cni_bin_dirs,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(config.cni_plugin_timeout, Duration::from_secs(60));
        assert_eq!(config.cni_fast_path, FastPathMode::Off);
    }

    #[test]
    fn fast_path_comes_from_the_file_or_the_flag() {
        let file = write("cni-fast-path = \"auto\"\n");
        let cli = Cli {
            config: Some(file.path().to_owned()),
            ..Cli::default()
        };
        assert_eq!(
            Config::resolve(cli).expect("resolves").cni_fast_path,
            FastPathMode::Auto
        );
        let cli = Cli {
            config: Some(file.path().to_owned()),
            cni_fast_path: Some(FastPathMode::Off),
            ..Cli::default()
        };
        assert_eq!(
            Config::resolve(cli).expect("resolves").cni_fast_path,
            FastPathMode::Off
        );
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file =
            write("root = \"/srv/crisp\"\nsocket = \"/tmp/file.sock\"\ncni-bin-dir = \"/a:/b\"\n");
        let cli = Cli {
            socket: Some("/tmp/flag.sock".into()),
            config: Some(file.path().to_owned()),
            ..Cli::default()
        };
        let config = Config::resolve(cli).expect("resolves");
        assert_eq!(config.socket, PathBuf::from("/tmp/flag.sock"));
        assert_eq!(config.root, PathBuf::from("/srv/crisp"));
        assert_eq!(
            config.cni_bin_dirs,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn unknown_file_keys_are_refused_naming_the_file() {
        let file = write("sockett = \"/x\"\n");
        let cli = Cli {
            config: Some(file.path().to_owned()),
            ..Cli::default()
        };
        let err = Config::resolve(cli).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains(&file.path().display().to_string()), "{msg}");
        assert!(msg.contains("sockett"), "{msg}");
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(
            Config::resolve(Cli::default()).expect("ok").metrics_addr,
            None
        );
        let file = write("metrics-addr = \"127.0.0.1:9325\"\n");
        let cli = Cli {
            config: Some(file.path().to_owned()),
            ..Cli::default()
        };
        let config = Config::resolve(cli).expect("resolves");
        assert_eq!(
            config.metrics_addr,
            Some("127.0.0.1:9325".parse().expect("addr"))
        );
    }

    #[test]
    fn check_interval_defaults_to_60_s_and_0_turns_it_off() {
        let config = Config::resolve(Cli::default()).expect("defaults");
        assert_eq!(config.cni_check_interval, Some(Duration::from_secs(60)));
        assert_eq!(config.cgroup_driver, None);
        let file = write("cni-check-interval = 0\ncgroup-driver = \"systemd\"\n");
        let cli = Cli {
            config: Some(file.path().to_owned()),
            ..Cli::default()
        };
        let config = Config::resolve(cli).expect("resolves");
        assert_eq!(config.cni_check_interval, None);
        assert_eq!(config.cgroup_driver, Some(CgroupDriver::Systemd));
        let cli = Cli {
            config: Some(file.path().to_owned()),
            cni_check_interval: Some(5),
            cgroup_driver: Some(CgroupDriver::Cgroupfs),
            ..Cli::default()
        };
        let config = Config::resolve(cli).expect("resolves");
        assert_eq!(config.cni_check_interval, Some(Duration::from_secs(5)));
        assert_eq!(config.cgroup_driver, Some(CgroupDriver::Cgroupfs));
    }

    #[test]
    fn nri_is_off_by_default_and_its_keys_come_from_file_and_flags() {
        let config = Config::resolve(Cli::default()).expect("defaults");
        assert_eq!(config.nri, NriMode::Off);
        assert_eq!(config.nri_socket, PathBuf::from(DEFAULT_NRI_SOCKET));
        assert_eq!(config.nri_plugin_dir, PathBuf::from(DEFAULT_NRI_PLUGIN_DIR));
        assert_eq!(config.nri_request_timeout, Duration::from_secs(2));
        assert_eq!(config.nri_registration_timeout, Duration::from_secs(5));
        let file = write("nri = \"on\"\nnri-socket = \"/tmp/n.sock\"\nnri-plugin-dir = \"/p\"\n");
        let cli = Cli {
            config: Some(file.path().to_owned()),
            nri_plugin_config_dir: Some("/c".into()),
            nri_request_timeout: Some(7),
            ..Cli::default()
        };
        let config = Config::resolve(cli).expect("resolves");
        assert_eq!(config.nri, NriMode::On);
        assert_eq!(config.nri_socket, PathBuf::from("/tmp/n.sock"));
        assert_eq!(config.nri_plugin_dir, PathBuf::from("/p"));
        assert_eq!(config.nri_plugin_config_dir, PathBuf::from("/c"));
        assert_eq!(config.nri_request_timeout, Duration::from_secs(7));
        let zero = Cli {
            nri_registration_timeout: Some(0),
            ..Cli::default()
        };
        let err = Config::resolve(zero).expect_err("zero timeout");
        assert!(
            err.to_string().contains("nri-registration-timeout"),
            "{err}"
        );
    }

    #[test]
    fn zero_timeout_is_refused() {
        let cli = Cli {
            cni_plugin_timeout: Some(0),
            ..Cli::default()
        };
        assert!(Config::resolve(cli).is_err());
    }
}
