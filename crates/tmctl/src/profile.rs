//! Where the server is and which key to use: a profile of the configuration file
//! (`$XDG_CONFIG_HOME/tmctl/config.toml`, else `~/.config/tmctl/config.toml`), under
//! the environment (`TMCTL_URL`, `TMCTL_KEY`), under the flags.
//!
//! ```toml
//! default_profile = "staging"
//!
//! [profiles.staging]
//! url = "https://tm.staging.internal"
//! key = "…"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
struct File {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// One server and key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub url: Option<String>,
    pub key: Option<String>,
}

/// The configuration file's path: `TMCTL_CONFIG`, else under the XDG config home.
pub fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TMCTL_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("tmctl").join("config.toml"))
}

/// The settings in effect: the profile named (or the file's default, or `default`),
/// then `TMCTL_URL` / `TMCTL_KEY`, then `flags`.
pub fn resolve(name: Option<&str>, flags: &Profile) -> Result<Profile, String> {
    let file: File = match config_path() {
        Some(path) if path.exists() => Figment::from(Toml::file(&path))
            .extract()
            .map_err(|e| format!("{}: {e}", path.display()))?,
        _ => File::default(),
    };
    let name = name
        .map(str::to_owned)
        .or(file.default_profile)
        .unwrap_or_else(|| "default".to_owned());
    let from_file = match file.profiles.get(&name) {
        Some(profile) => profile.clone(),
        None if name == "default" => Profile::default(),
        None => return Err(format!("no profile {name:?} in the configuration file")),
    };
    Figment::from(Serialized::defaults(from_file))
        .merge(Env::prefixed("TMCTL_").only(&["url", "key"]))
        .merge(Serialized::defaults(Flags(flags)))
        .extract()
        .map_err(|e| e.to_string())
}

/// The flags given, leaving out those not given (so that they hide nothing).
struct Flags<'a>(&'a Profile);

impl Serialize for Flags<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if let Some(url) = &self.0.url {
            map.serialize_entry("url", url)?;
        }
        if let Some(key) = &self.0.key {
            map.serialize_entry("key", key)?;
        }
        map.end()
    }
}
