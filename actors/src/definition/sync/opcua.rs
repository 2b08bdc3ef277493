//! An OPC-UA source's definition: an endpoint, its security, and a `mapping`
//! from node id to the USD attribute the node measures.

use super::{Target, check_name, is_loopback};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Monitored variables of an OPC-UA server, read through one subscription.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawOpcua")]
pub struct OpcuaSourceSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `opc.tcp://host[:port][/path]` (port 4840 by default).
    pub endpoint: String,
    pub security: OpcuaSecurity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password is never in the definition: it is read from this
    /// environment variable of the node, or from this file on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub password_file: Option<PathBuf>,
    /// How often the server sends what changed, in milliseconds (the
    /// subscription's publishing interval; 10 to 60,000).
    pub publishing_interval_ms: u64,
    /// How often the server samples each node, in milliseconds; the
    /// publishing interval unless given.
    pub sampling_interval_ms: u64,
    /// Node id (`ns=2;s=Arm.elbow`, `ns=3;i=1005`) to the USD attribute it
    /// measures. A numeric value is a scalar; an array of 3 numbers a
    /// vector (`.position`); an array of 7 a `.pose`
    /// (x, y, z, qx, qy, qz, qw).
    pub mapping: BTreeMap<String, Target>,
}

/// OPC UA's own channel security: the messages are signed and encrypted
/// with the certificates given; the server's certificate is pinned.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaSecurity {
    #[serde(default)]
    pub policy: SecurityPolicy,
    #[serde(default)]
    pub mode: SecurityMode,
    /// The twin's application instance certificate (`.der` or `.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cert_file: Option<PathBuf>,
    /// Its private key, in PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key_file: Option<PathBuf>,
    /// The server's certificate (`.der` or `.pem`): the only server this
    /// source trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub server_cert_file: Option<PathBuf>,
    /// The application URI in the twin's certificate; servers check that
    /// the two agree. `urn:hanzo-twin:client` unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_uri: Option<String>,
}

impl Default for OpcuaSecurity {
    fn default() -> Self {
        OpcuaSecurity {
            policy: SecurityPolicy::None,
            mode: SecurityMode::None,
            cert_file: None,
            key_file: None,
            server_cert_file: None,
            application_uri: None,
        }
    }
}

/// The client application URI when the definition names none.
pub const DEFAULT_APPLICATION_URI: &str = "urn:hanzo-twin:client";

impl OpcuaSecurity {
    pub fn application_uri(&self) -> &str {
        self.application_uri
            .as_deref()
            .unwrap_or(DEFAULT_APPLICATION_URI)
    }
}

/// The OPC UA security policies a source can use.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SecurityPolicy {
    #[default]
    None,
    Basic256Sha256,
    #[serde(rename = "Aes128_Sha256_RsaOaep")]
    Aes128Sha256RsaOaep,
    #[serde(rename = "Aes256_Sha256_RsaPss")]
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// The policy's name in OPC UA's security policy URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::None => "None",
            SecurityPolicy::Basic256Sha256 => "Basic256Sha256",
            SecurityPolicy::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
            SecurityPolicy::Aes256Sha256RsaPss => "Aes256_Sha256_RsaPss",
        }
    }
}

/// What the security policy is used for.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpcua {
    #[serde(default)]
    name: Option<String>,
    endpoint: String,
    #[serde(default)]
    security: OpcuaSecurity,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    publishing_interval_ms: Option<u64>,
    #[serde(default)]
    sampling_interval_ms: Option<u64>,
    mapping: BTreeMap<String, Target>,
}

impl TryFrom<RawOpcua> for OpcuaSourceSpec {
    type Error = String;

    fn try_from(raw: RawOpcua) -> Result<Self, String> {
        check_name(raw.name.as_deref())?;
        let host = endpoint_host(&raw.endpoint)?;
        check_security(&raw.security, &raw.endpoint, is_loopback(&host))?;
        if raw.password_env.is_some() && raw.password_file.is_some() {
            return Err("set one of password_env and password_file, not both".into());
        }
        let has_password = raw.password_env.is_some() || raw.password_file.is_some();
        if has_password != raw.username.is_some() {
            return Err(
                "a username and a password (password_env or password_file) go together".into(),
            );
        }
        let publishing_interval_ms = raw.publishing_interval_ms.unwrap_or(100);
        if !(10..=60_000).contains(&publishing_interval_ms) {
            return Err(format!(
                "publishing_interval_ms must be 10 to 60000, got {publishing_interval_ms}"
            ));
        }
        let sampling_interval_ms = raw.sampling_interval_ms.unwrap_or(publishing_interval_ms);
        if sampling_interval_ms > 60_000 {
            return Err(format!(
                "sampling_interval_ms must be at most 60000, got {sampling_interval_ms}"
            ));
        }
        if raw.mapping.is_empty() {
            return Err("mapping must map at least one node id to a USD attribute".into());
        }
        for (node, target) in &raw.mapping {
            check_node_id(node).map_err(|e| format!("mapping.{node}: {e}"))?;
            if target.attribute.is_none() {
                return Err(format!(
                    "mapping.{node}: a node maps to an attribute (`{target}.position`, `.temperature`, `.pose`), not to a prim"
                ));
            }
        }
        Ok(OpcuaSourceSpec {
            name: raw.name,
            endpoint: raw.endpoint,
            security: raw.security,
            username: raw.username,
            password_env: raw.password_env,
            password_file: raw.password_file,
            publishing_interval_ms,
            sampling_interval_ms,
            mapping: raw.mapping,
        })
    }
}

/// The host of an `opc.tcp://` endpoint.
fn endpoint_host(endpoint: &str) -> Result<String, String> {
    let bad = || format!("endpoint `{endpoint}` is not like opc.tcp://host:4840/path");
    let rest = endpoint.strip_prefix("opc.tcp://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    if let Some(port) = port
        && port.parse::<u16>().ok().filter(|p| *p > 0).is_none()
    {
        return Err(format!("endpoint `{endpoint}`: `{port}` is not a port"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
        return Err(bad());
    }
    Ok(host.to_string())
}

/// The spec's Sync Channel Security: an encrypted channel with pinned
/// certificates, or a channel on this very host (a local gateway).
fn check_security(security: &OpcuaSecurity, endpoint: &str, loopback: bool) -> Result<(), String> {
    let none_policy = security.policy == SecurityPolicy::None;
    let none_mode = security.mode == SecurityMode::None;
    if none_policy != none_mode {
        return Err(format!(
            "security: policy {} with mode {}; policy None goes with mode none, and a policy with sign or sign_and_encrypt",
            security.policy.as_str(),
            serde_json::to_value(security.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ));
    }
    if security.mode != SecurityMode::SignAndEncrypt && !loopback {
        return Err(format!(
            "endpoint `{endpoint}` is not on this host: its channel must be encrypted (security.mode sign_and_encrypt with a policy such as Basic256Sha256)"
        ));
    }
    if none_mode {
        let set = [
            ("cert_file", security.cert_file.is_some()),
            ("key_file", security.key_file.is_some()),
            ("server_cert_file", security.server_cert_file.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
            return Err(format!(
                "security.{field} does not apply to an unsecured channel (mode none)"
            ));
        }
        return Ok(());
    }
    for (field, path) in [
        ("cert_file", &security.cert_file),
        ("server_cert_file", &security.server_cert_file),
    ] {
        let path = path.as_deref().ok_or_else(|| {
            format!("security.{field} must be set: a secured channel needs both certificates")
        })?;
        check_cert_extension(path).map_err(|e| format!("security.{field}: {e}"))?;
    }
    if security.key_file.is_none() {
        return Err("security.key_file must be set: the private key of cert_file, in PEM".into());
    }
    Ok(())
}

fn check_cert_extension(path: &Path) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("der" | "pem") => Ok(()),
        _ => Err(format!(
            "`{}` must be a .der or .pem certificate",
            path.display()
        )),
    }
}

/// An OPC UA node id in its text form: `ns=<namespace>;` (optional, 0
/// when absent) then `i=<number>`, `s=<string>`, `g=<guid>` or
/// `b=<base64>`.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!(
            "`{id}` is not an OPC UA node id ({why}); write e.g. ns=2;s=Arm.elbow or ns=3;i=1005"
        )
    };
    let rest = match id.strip_prefix("ns=") {
        Some(rest) => {
            let (ns, rest) = rest.split_once(';').ok_or_else(|| bad("no `;` after ns"))?;
            ns.parse::<u16>()
                .map_err(|_| bad("the namespace is not 0 to 65535"))?;
            rest
        }
        None => id,
    };
    let (kind, value) = rest.split_once('=').ok_or_else(|| bad("no identifier"))?;
    match kind {
        "i" => value
            .parse::<u32>()
            .map(|_| ())
            .map_err(|_| bad("i= takes a number up to 4294967295")),
        "s" if !value.is_empty() && value.len() <= 4096 => Ok(()),
        "s" => Err(bad("s= takes 1 to 4096 characters")),
        "g" => {
            let groups: Vec<&str> = value.split('-').collect();
            let lengths = [8, 4, 4, 4, 12];
            let ok = groups.len() == 5
                && groups
                    .iter()
                    .zip(lengths)
                    .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
            if ok {
                Ok(())
            } else {
                Err(bad("g= takes a GUID"))
            }
        }
        "b" if !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')) =>
        {
            Ok(())
        }
        "b" => Err(bad("b= takes base64")),
        _ => Err(bad("the identifier type is not i, s, g or b")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<OpcuaSourceSpec, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn node_ids_in_text_form_are_checked() {
        for good in [
            "ns=2;s=Arm.elbow",
            "ns=3;i=1005",
            "i=2258",
            "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a",
            "ns=4;b=M/RbKBsRVkePCePcx24oRA==",
        ] {
            assert_eq!(check_node_id(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Arm.elbow",
            "ns=x;s=a",
            "ns=70000;i=1",
            "ns=2;i=-1",
            "ns=2;s=",
            "ns=2;g=123",
            "ns=2;q=1",
        ] {
            assert!(check_node_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_channel_off_this_host_is_encrypted_with_pinned_certificates() {
        let mapping = serde_json::json!({ "ns=2;s=Arm.elbow": "/World/Arm/elbow.position" });
        // Plain on loopback: a local gateway.
        let local = parse(serde_json::json!({
            "endpoint": "opc.tcp://127.0.0.1:4840/", "mapping": mapping,
        }))
        .expect("loopback");
        assert_eq!(local.security.mode, SecurityMode::None);
        assert_eq!(local.publishing_interval_ms, 100);
        for (security, says) in [
            (serde_json::json!({}), "must be encrypted"),
            (
                serde_json::json!({ "policy": "Basic256Sha256", "mode": "sign" }),
                "must be encrypted",
            ),
            (
                serde_json::json!({ "policy": "Basic256Sha256", "mode": "sign_and_encrypt" }),
                "security.cert_file must be set",
            ),
            (
                serde_json::json!({ "policy": "None", "mode": "sign_and_encrypt" }),
                "policy None goes with mode none",
            ),
            (
                serde_json::json!({
                    "policy": "Basic256Sha256", "mode": "sign_and_encrypt",
                    "cert_file": "/c.crt", "key_file": "/k.pem", "server_cert_file": "/s.der",
                }),
                ".der or .pem",
            ),
        ] {
            let err = parse(serde_json::json!({
                "endpoint": "opc.tcp://plc.plant:4840", "security": security, "mapping": mapping,
            }))
            .expect_err(says);
            assert!(err.contains(says), "{err}");
        }
        let remote = parse(serde_json::json!({
            "endpoint": "opc.tcp://plc.plant:4840",
            "security": {
                "policy": "Basic256Sha256", "mode": "sign_and_encrypt",
                "cert_file": "/c.der", "key_file": "/k.pem", "server_cert_file": "/s.der",
            },
            "username": "twin", "password_env": "PLC_PASSWORD",
            "mapping": mapping,
        }))
        .expect("encrypted");
        assert_eq!(remote.security.policy, SecurityPolicy::Basic256Sha256);
        for (json, says) in [
            (
                serde_json::json!({ "endpoint": "tcp://127.0.0.1", "mapping": mapping }),
                "not like opc.tcp://",
            ),
            (
                serde_json::json!({ "endpoint": "opc.tcp://127.0.0.1:0", "mapping": mapping }),
                "not a port",
            ),
            (
                serde_json::json!({ "endpoint": "opc.tcp://127.0.0.1", "username": "u", "mapping": mapping }),
                "go together",
            ),
            (
                serde_json::json!({ "endpoint": "opc.tcp://127.0.0.1", "mapping": { "ns=2;s=a": "/World/Arm" } }),
                "not to a prim",
            ),
            (
                serde_json::json!({ "endpoint": "opc.tcp://127.0.0.1", "mapping": {} }),
                "at least one node id",
            ),
            (
                serde_json::json!({ "endpoint": "opc.tcp://127.0.0.1", "publishing_interval_ms": 1, "mapping": mapping }),
                "publishing_interval_ms",
            ),
        ] {
            let err = parse(json.clone()).expect_err(says);
            assert!(err.contains(says), "{json}: {err}");
        }
    }
}
