//! CNI specification versions: parsing and ordering them, and what a plugin
//! says it supports when asked `CNI_COMMAND=VERSION` (as libcni's
//! `pkg/version` does).

use std::fmt;
use std::str::FromStr;

/// Every CNI spec version this runtime understands, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// True if `v` is exactly one of [`SUPPORTED_VERSIONS`].
pub fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// Errors from parsing versions or a plugin's VERSION answer.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("invalid CNI version \"{version}\": {reason}")]
    Invalid { version: String, reason: String },
    #[error("decoding plugin version info: {0}")]
    Decode(String),
    #[error(
        "incompatible CNI versions: config is \"{config}\", plugin supports [{}]",
        .supported.join(", ")
    )]
    Incompatible {
        config: String,
        supported: Vec<String>,
    },
}

/// Parsed semver-ish CNI version (major, minor, patch); "" or absent means "0.1.0" like libcni.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CniVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl CniVersion {
    pub const V0_1_0: CniVersion = CniVersion::new(0, 1, 0);
    pub const V0_4_0: CniVersion = CniVersion::new(0, 4, 0);
    pub const V1_0_0: CniVersion = CniVersion::new(1, 0, 0);
    pub const V1_1_0: CniVersion = CniVersion::new(1, 1, 0);

    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        CniVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses like libcni's `version.ParseVersion`: "" is 0.1.0, and missing
    /// minor/patch parts count as 0 ("1" and "1.0" are 1.0.0).
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        if s.is_empty() {
            return Ok(Self::V0_1_0);
        }
        let invalid = |reason: String| VersionError::Invalid {
            version: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() > 3 {
            return Err(invalid("too many parts".to_string()));
        }
        let mut nums = [0u32; 3];
        for (slot, part) in nums.iter_mut().zip(&parts) {
            // Digits only: u32::from_str would also take a leading '+'.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("part \"{part}\" is not a number")));
            }
            *slot = part
                .parse()
                .map_err(|_| invalid(format!("part \"{part}\" is out of range")))?;
        }
        Ok(Self::new(nums[0], nums[1], nums[2]))
    }

    /// CHECK exists from spec 0.4.0 on.
    pub fn supports_check(&self) -> bool {
        *self >= Self::V0_4_0
    }

    /// STATUS and GC exist from spec 1.1.0 on.
    pub fn supports_status_gc(&self) -> bool {
        *self >= Self::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for CniVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What a plugin answers to CNI_COMMAND=VERSION: {"cniVersion": "...", "supportedVersions": [...]}
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PluginVersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

impl PluginVersionInfo {
    /// What libcni assumes for a plugin too old to know the VERSION command
    /// (it fails with "unknown CNI_COMMAND: VERSION").
    pub fn legacy() -> Self {
        PluginVersionInfo {
            cni_version: "0.1.0".to_string(),
            supported_versions: vec!["0.1.0".to_string()],
        }
    }

    /// Decodes a VERSION answer, refusing what libcni's `PluginDecoder` refuses:
    /// no `cniVersion`, or no `supportedVersions` from a plugin newer than 0.2.0.
    pub fn parse(stdout: &[u8]) -> Result<Self, VersionError> {
        let info: PluginVersionInfo =
            serde_json::from_slice(stdout).map_err(|e| VersionError::Decode(e.to_string()))?;
        if info.cni_version.is_empty() {
            return Err(VersionError::Decode("missing field cniVersion".to_string()));
        }
        if info.effective_versions().is_empty() {
            return Err(VersionError::Decode(format!(
                "missing field supportedVersions (plugin cniVersion \"{}\")",
                info.cni_version
            )));
        }
        Ok(info)
    }

    /// The versions the plugin supports. Without a list, a 0.2.0 plugin
    /// supports 0.1.0 and 0.2.0 (libcni `PluginDecoder`) and a 0.1.0 plugin
    /// only 0.1.0; any other plugin without a list supports nothing.
    pub fn effective_versions(&self) -> Vec<String> {
        if !self.supported_versions.is_empty() {
            return self.supported_versions.clone();
        }
        let legacy: &[&str] = match self.cni_version.as_str() {
            "0.2.0" => &["0.1.0", "0.2.0"],
            "" | "0.1.0" => &["0.1.0"],
            _ => &[],
        };
        legacy.iter().map(|v| v.to_string()).collect()
    }

    pub fn supports(&self, v: &str) -> bool {
        self.effective_versions().iter().any(|s| s == v)
    }

    /// libcni's `Reconciler.Check`: the config version must be listed exactly.
    pub fn check(&self, config_version: &str) -> Result<(), VersionError> {
        if self.supports(config_version) {
            return Ok(());
        }
        Err(VersionError::Incompatible {
            config: config_version.to_string(),
            supported: self.effective_versions(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> CniVersion {
        CniVersion::parse(s).unwrap()
    }

    #[test]
    fn parses_all_supported_versions_and_round_trips_display() {
        for s in SUPPORTED_VERSIONS {
            assert_eq!(v(s).to_string(), *s);
            assert!(is_supported(s));
        }
        assert_eq!(
            "0.3.1".parse::<CniVersion>().unwrap(),
            CniVersion::new(0, 3, 1)
        );
    }

    #[test]
    fn empty_means_0_1_0_and_short_forms_fill_zeroes() {
        assert_eq!(v(""), CniVersion::new(0, 1, 0));
        assert_eq!(v("1"), CniVersion::new(1, 0, 0));
        assert_eq!(v("0.1"), CniVersion::new(0, 1, 0));
        assert!(!is_supported(""));
        assert!(!is_supported("1.0"));
    }

    #[test]
    fn bad_versions_are_refused_naming_the_string() {
        for bad in [
            "1.0.0.0",
            "a.b.c",
            "1..0",
            "1.0.x",
            "+1.0.0",
            "-1.0.0",
            "1.0.",
            " 1.0.0",
            "99999999999.0.0",
        ] {
            let err = CniVersion::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("\"{bad}\"")), "{err}");
        }
    }

    #[test]
    fn ordering_follows_semver() {
        let mut all: Vec<CniVersion> = SUPPORTED_VERSIONS.iter().rev().map(|s| v(s)).collect();
        all.sort();
        let sorted: Vec<String> = all.iter().map(|x| x.to_string()).collect();
        assert_eq!(sorted, SUPPORTED_VERSIONS);
        assert!(v("0.10.0") > v("0.4.0"));
        assert!(v("1.0.0") > v("0.99.99"));
        assert!(v("1.1.0") > v("1.0.9"));
    }

    #[test]
    fn feature_gates() {
        let check: Vec<&str> = SUPPORTED_VERSIONS
            .iter()
            .copied()
            .filter(|s| v(s).supports_check())
            .collect();
        assert_eq!(check, ["0.4.0", "1.0.0", "1.1.0"]);
        let gc: Vec<&str> = SUPPORTED_VERSIONS
            .iter()
            .copied()
            .filter(|s| v(s).supports_status_gc())
            .collect();
        assert_eq!(gc, ["1.1.0"]);
    }

    #[test]
    fn plugin_info_with_list() {
        let spec = br#"{"cniVersion": "1.1.0", "supportedVersions": [ "0.1.0", "0.2.0", "0.3.0",
            "0.3.1", "0.4.0", "1.0.0", "1.1.0" ]}"#;
        let info = PluginVersionInfo::parse(spec).unwrap();
        for s in SUPPORTED_VERSIONS {
            assert!(info.supports(s));
            assert!(info.check(s).is_ok());
        }
        assert!(!info.supports("1.2.0"));
        let err = info.check("1.2.0").unwrap_err().to_string();
        assert!(err.contains("\"1.2.0\"") && err.contains("1.1.0"), "{err}");
    }

    #[test]
    fn plugin_info_legacy_without_list() {
        let info = PluginVersionInfo::parse(br#"{"cniVersion": "0.2.0"}"#).unwrap();
        assert!(info.supports("0.1.0") && info.supports("0.2.0"));
        assert!(!info.supports("0.3.0"));

        let info = PluginVersionInfo::parse(br#"{"cniVersion": "0.1.0"}"#).unwrap();
        assert_eq!(info.effective_versions(), ["0.1.0"]);

        let legacy = PluginVersionInfo::legacy();
        assert!(legacy.supports("0.1.0") && !legacy.supports("0.2.0"));
    }

    #[test]
    fn plugin_info_refusals() {
        let err = PluginVersionInfo::parse(br#"{"cniVersion": "0.4.0"}"#).unwrap_err();
        assert!(err.to_string().contains("supportedVersions"), "{err}");
        let err =
            PluginVersionInfo::parse(br#"{"cniVersion": "", "supportedVersions": ["0.4.0"]}"#)
                .unwrap_err();
        assert!(err.to_string().contains("cniVersion"), "{err}");
        for garbage in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"cniVersion\": 1}",
            b"not json",
        ] {
            assert!(PluginVersionInfo::parse(garbage).is_err());
        }
        // Deserialized directly (bypassing parse), a list-less newer plugin supports nothing.
        let info: PluginVersionInfo = serde_json::from_str(r#"{"cniVersion": "1.0.0"}"#).unwrap();
        assert!(!info.supports("1.0.0"));
    }
}
