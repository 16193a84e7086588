//! User-agent parsing for `ua_based` conditions.
//!
//! Uses the `ua-parser` crate (the uap-core project's Rust port) with
//! uap-core's `regexes.yaml`, shipped in `client/data/uap-core/` under its
//! Apache-2.0 licence, so family names are the uap-core ones Statsig uses
//! (`iOS`, `Mac OS X`, `Android`, `Chrome`, `Chrome Mobile`, `Mobile Safari`,
//! `Firefox`...). The extractors are built once, on first use. Versions are
//! the parts the UA carries joined by `.`, `0.0.0` when there are none; an
//! unrecognised UA has family `Other`.

use crate::value::DynValue;
use std::sync::OnceLock;

const REGEXES_YAML: &str = include_str!("../data/uap-core/regexes.yaml");

/// The four UA fields a condition can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UaField {
    OsName,
    OsVersion,
    BrowserName,
    BrowserVersion,
}

impl UaField {
    /// `os_name`/`osname`, ... (the field lower-cased).
    pub fn from_field_lower(lower: &str) -> Option<UaField> {
        match lower {
            "os_name" | "osname" => Some(UaField::OsName),
            "os_version" | "osversion" => Some(UaField::OsVersion),
            "browser_name" | "browsername" => Some(UaField::BrowserName),
            "browser_version" | "browserversion" => Some(UaField::BrowserVersion),
            _ => None,
        }
    }
}

/// The parsed fields of one user agent.
#[derive(Clone, Debug, Default)]
pub struct UaInfo {
    pub os_name: Option<DynValue>,
    pub os_version: Option<DynValue>,
    pub browser_name: Option<DynValue>,
    pub browser_version: Option<DynValue>,
}

impl UaInfo {
    pub fn get(&self, f: UaField) -> Option<&DynValue> {
        match f {
            UaField::OsName => self.os_name.as_ref(),
            UaField::OsVersion => self.os_version.as_ref(),
            UaField::BrowserName => self.browser_name.as_ref(),
            UaField::BrowserVersion => self.browser_version.as_ref(),
        }
    }
}

struct Extractors {
    browser: ua_parser::user_agent::Extractor<'static>,
    os: ua_parser::os::Extractor<'static>,
}

fn extractors() -> Option<&'static Extractors> {
    static EXTRACTORS: OnceLock<Option<Extractors>> = OnceLock::new();
    EXTRACTORS.get_or_init(build).as_ref()
}

fn build() -> Option<Extractors> {
    let regexes: ua_parser::Regexes<'static> = serde_yaml::from_str(REGEXES_YAML).ok()?;
    let browser = regexes
        .user_agent_parsers
        .into_iter()
        .try_fold(ua_parser::user_agent::Builder::new(), |b, p| b.push(p))
        .ok()?
        .build()
        .ok()?;
    let os = regexes
        .os_parsers
        .into_iter()
        .try_fold(ua_parser::os::Builder::new(), |b, p| b.push(p))
        .ok()?
        .build()
        .ok()?;
    Some(Extractors { browser, os })
}

/// Build the parser now (it is otherwise built on first use).
pub fn warm_up() -> bool {
    extractors().is_some()
}

fn join_version(parts: &[Option<&str>]) -> String {
    let present: Vec<&str> = parts.iter().map_while(|p| *p).collect();
    if present.is_empty() {
        "0.0.0".to_string()
    } else {
        present.join(".")
    }
}

/// Parse a user agent. Unknown agents get family `Other`, version `0.0.0`.
pub fn parse(ua: &str) -> UaInfo {
    let Some(ex) = extractors() else {
        return UaInfo::default();
    };
    let (browser_name, browser_version) = match ex.browser.extract(ua) {
        Some(v) => (
            v.family.to_string(),
            join_version(&[v.major, v.minor, v.patch, v.patch_minor]),
        ),
        None => ("Other".to_string(), "0.0.0".to_string()),
    };
    let (os_name, os_version) = match ex.os.extract(ua) {
        Some(v) => (
            v.os.to_string(),
            join_version(&[
                v.major.as_deref(),
                v.minor.as_deref(),
                v.patch.as_deref(),
                v.patch_minor.as_deref(),
            ]),
        ),
        None => ("Other".to_string(), "0.0.0".to_string()),
    };
    UaInfo {
        os_name: Some(DynValue::from_str_value(&os_name)),
        os_version: Some(DynValue::from_str_value(&os_version)),
        browser_name: Some(DynValue::from_str_value(&browser_name)),
        browser_version: Some(DynValue::from_str_value(&browser_version)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &Option<DynValue>) -> &str {
        v.as_ref().and_then(|v| v.string.as_deref()).unwrap_or("")
    }

    #[test]
    fn families_are_uap_core_names() {
        let i = parse("Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.5 Mobile/15E148 Safari/604.1");
        assert_eq!(s(&i.os_name), "iOS");
        assert_eq!(s(&i.os_version), "16.5");
        assert_eq!(s(&i.browser_name), "Mobile Safari");
        let i = parse("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 Mobile Safari/537.36");
        assert_eq!(s(&i.os_name), "Android");
        assert_eq!(s(&i.browser_name), "Chrome Mobile");
        let i = parse(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:109.0) Gecko/20100101 Firefox/118.0",
        );
        assert_eq!(s(&i.os_name), "Mac OS X");
        assert_eq!(s(&i.browser_name), "Firefox");
        assert_eq!(s(&i.browser_version), "118.0");
        let i = parse("definitely not a browser");
        assert_eq!(s(&i.browser_name), "Other");
        assert_eq!(s(&i.browser_version), "0.0.0");
    }
}
