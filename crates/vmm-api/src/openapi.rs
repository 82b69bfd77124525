//! The OpenAPI 3.0 description of the API, kept in `crates/vmm-api/openapi.json` and checked
//! against [`crate::routes::ROUTES`] and the serde types by the tests below.

/// The OpenAPI description (JSON), as served to whoever asks for it and checked by tests.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use serde::Serialize;
    use serde_json::Value;

    use super::OPENAPI_JSON;
    use crate::config::{
        BalloonConfig, ConsoleConfig, DiskConfig, NetConfig, RngConfig, SerialConfig, VmConfig,
    };
    use crate::config::{BootProtocol, CpusConfig, MemoryConfig, OnReboot, PayloadConfig};
    use crate::routes::ROUTES;
    use crate::types::*;

    fn spec() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is valid JSON")
    }

    fn schema<'a>(spec: &'a Value, name: &str) -> &'a Value {
        let schema = &spec["components"]["schemas"][name];
        assert!(
            schema.is_object(),
            "schema {name} missing from openapi.json"
        );
        schema
    }

    fn property_names(schema: &Value) -> BTreeSet<String> {
        schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Field names of a value as serde writes them, with every optional field filled in.
    fn field_names<T: Serialize>(value: &T) -> BTreeSet<String> {
        match serde_json::to_value(value).unwrap() {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    fn schema_name_of_ref(reference: &Value) -> &str {
        reference["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .unwrap_or_else(|| panic!("not a schema $ref: {reference}"))
    }

    fn full_config() -> VmConfig {
        VmConfig {
            payload: PayloadConfig {
                kernel: PathBuf::from("/k"),
                firmware: Some(PathBuf::from("/f")),
                initrd: Some(PathBuf::from("/i")),
                cmdline: "console=ttyS0".to_string(),
                boot_protocol: BootProtocol::Pvh,
            },
            cpus: CpusConfig {
                count: 2,
                features: "-cx16".to_string(),
            },
            memory: MemoryConfig { size_mib: 64 },
            serial: SerialConfig::Off,
            on_reboot: OnReboot::Exit,
            rng: Some(RngConfig::default()),
            balloon: Some(BalloonConfig {
                size_mib: 1,
                deflate_on_oom: true,
                stats: true,
            }),
            disks: vec![DiskConfig {
                path: PathBuf::from("/d"),
                readonly: true,
                direct: true,
                serial: Some("s".into()),
                id: Some("root".into()),
                bw: Some(1),
                iops: Some(1),
            }],
            console: Some(ConsoleConfig::File(PathBuf::from("/c"))),
            nets: vec![NetConfig {
                tap: Some("tap0".into()),
                fd: Some(3),
                mac: Some("02:00:00:00:00:01".into()),
                id: Some("lan".into()),
                bw: Some(1),
                ops: Some(1),
            }],
            vsock: Some(crate::config::VsockConfig {
                cid: 3,
                socket: PathBuf::from("/v.sock"),
            }),
        }
    }

    #[test]
    fn spec_routes_are_exactly_the_served_routes() {
        let spec = spec();
        let mut documented = BTreeSet::new();
        for (path, operations) in spec["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }

        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();

        assert_eq!(documented, served);
    }

    #[test]
    fn spec_bodies_and_answers_match_the_route_table() {
        let spec = spec();
        for route in ROUTES {
            let operation = &spec["paths"][route.path][route.method.to_ascii_lowercase()];
            let request_schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            assert_eq!(
                route.request_body.map(|b| b.schema),
                (!request_schema.is_null()).then(|| schema_name_of_ref(request_schema)),
                "request body of {} {}",
                route.method,
                route.path
            );
            let responses = &operation["responses"];
            match route.response_body {
                Some(name) => {
                    let ok = &responses["200"]["content"]["application/json"]["schema"];
                    assert_eq!(schema_name_of_ref(ok), name, "{}", route.path);
                    assert!(responses["204"].is_null(), "{}", route.path);
                }
                None => {
                    assert!(responses["204"].is_object(), "{}", route.path);
                    assert!(responses["200"].is_null(), "{}", route.path);
                }
            }
        }
    }

    #[test]
    fn every_error_response_is_an_error_body() {
        let spec = spec();
        for (name, response) in spec["components"]["responses"].as_object().unwrap() {
            let body = &response["content"]["application/json"]["schema"];
            assert_eq!(schema_name_of_ref(body), "ErrorBody", "{name}");
        }
    }

    #[test]
    fn request_schemas_match_the_request_types() {
        let spec = spec();
        let balloon = BalloonRequest { target_mib: 1 };
        let snapshot = SnapshotRequest {
            destination: PathBuf::from("/d"),
            diff: true,
        };
        for (name, fields) in [
            ("BalloonRequest", field_names(&balloon)),
            ("SnapshotRequest", field_names(&snapshot)),
        ] {
            let schema = schema(&spec, name);
            assert_eq!(property_names(schema), fields, "{name}");
            assert_eq!(schema["additionalProperties"], false, "{name}");
        }
    }

    #[test]
    fn required_fields_are_the_ones_without_defaults() {
        let spec = spec();
        let required = |name: &str| -> Vec<String> {
            serde_json::from_value(schema(&spec, name)["required"].clone()).unwrap()
        };

        assert_eq!(required("BalloonRequest"), ["target_mib"]);
        assert_eq!(required("SnapshotRequest"), ["destination"]);
        let minimal: SnapshotRequest =
            serde_json::from_str(r#"{"destination":"/d"}"#).expect("diff has a default");
        assert!(!minimal.diff);
    }

    #[test]
    fn response_schemas_match_the_response_types() {
        let spec = spec();
        let mut counters = Counters::default();
        counters.exits.insert("io".into(), 1);
        counters
            .devices
            .insert("d".into(), DeviceCounters::default());
        let info = VmInfo {
            state: VmState::Running,
            config: full_config(),
            uptime_ms: 1,
            boots: 1,
        };
        let expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
            ("PingResponse", field_names(&PingResponse::current())),
            ("VmInfo", field_names(&info)),
            ("Counters", field_names(&counters)),
            ("DeviceCounters", field_names(&DeviceCounters::default())),
            ("DiskCounters", field_names(&DiskCounters::default())),
            (
                "ErrorBody",
                field_names(&ErrorBody {
                    error: String::new(),
                }),
            ),
        ]);

        for (name, fields) in expected {
            assert_eq!(property_names(schema(&spec, name)), fields, "{name}");
        }
    }

    #[test]
    fn config_schemas_match_the_config_types() {
        let spec = spec();
        let config = full_config();

        assert_eq!(
            property_names(schema(&spec, "VmConfig")),
            field_names(&config)
        );
        assert_eq!(
            property_names(schema(&spec, "PayloadConfig")),
            field_names(&config.payload)
        );
        assert_eq!(
            property_names(schema(&spec, "CpusConfig")),
            field_names(&config.cpus)
        );
        assert_eq!(
            property_names(schema(&spec, "MemoryConfig")),
            field_names(&config.memory)
        );
        assert_eq!(
            property_names(schema(&spec, "NetConfig")),
            field_names(&config.nets[0])
        );
        if let Some(vsock) = &config.vsock {
            assert_eq!(
                property_names(schema(&spec, "VsockConfig")),
                field_names(vsock)
            );
        }
    }

    #[test]
    fn enum_schemas_list_every_serialized_value() {
        let spec = spec();
        let documented = |values: &Value| -> BTreeSet<String> {
            serde_json::from_value(values.clone()).unwrap()
        };
        let serialized = |values: Vec<serde_json::Result<Value>>| -> BTreeSet<String> {
            values
                .into_iter()
                .map(|v| v.unwrap().as_str().unwrap().to_string())
                .collect()
        };
        use serde_json::to_value;

        assert_eq!(
            documented(&schema(&spec, "VmState")["enum"]),
            serialized(vec![to_value(VmState::Running), to_value(VmState::Paused)])
        );
        assert_eq!(
            documented(&schema(&spec, "BootProtocol")["enum"]),
            serialized(vec![
                to_value(BootProtocol::Auto),
                to_value(BootProtocol::Linux64),
                to_value(BootProtocol::Pvh)
            ])
        );
        assert_eq!(
            documented(&schema(&spec, "OnReboot")["enum"]),
            serialized(vec![to_value(OnReboot::Restart), to_value(OnReboot::Exit)])
        );
        assert_eq!(
            documented(&schema(&spec, "SerialConfig")["oneOf"][0]["enum"]),
            serialized(vec![
                to_value(SerialConfig::Stdio),
                to_value(SerialConfig::Off)
            ])
        );
    }

    #[test]
    fn every_path_is_versioned() {
        for route in ROUTES {
            assert!(route.path.starts_with("/api/v1/"), "{}", route.path);
        }
        assert_eq!(spec()["info"]["version"], API_VERSION);
    }
}
