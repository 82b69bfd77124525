//! Numbers and scaled sizes as libvirt reads them (`virScaleInteger`): `unit` is case-insensitive;
//! `b`/`byte`/`bytes` are bytes; a single letter or letter + `iB` is a power of 1024 (`k`, `KiB`,
//! `M`, `MiB`, ...); letter + `B` is a power of 1000 (`KB`, `MB`, ...); letters k, m, g, t, p, e.

use crate::error::DomainError;

/// The largest byte count libvirt accepts for a memory size (`LLONG_MAX`).
pub const MAX_MEMORY_BYTES: u64 = i64::MAX as u64;

/// Parses an unsigned decimal number (surrounding white space allowed, as `strtoull` does).
pub fn parse_u64(path: &str, text: &str) -> Result<u64, DomainError> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::invalid(path, text, "is not a number"));
    }
    digits
        .parse()
        .map_err(|_| DomainError::invalid(path, text, "is too large"))
}

/// Parses an unsigned number that must fit in 32 bits.
pub fn parse_u32(path: &str, text: &str) -> Result<u32, DomainError> {
    let value = parse_u64(path, text)?;
    u32::try_from(value).map_err(|_| DomainError::invalid(path, text, "is too large"))
}

/// How many bytes one `unit` is.
fn unit_bytes(unit_path: &str, unit: &str) -> Result<u64, DomainError> {
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Ok(1);
    }
    let mut chars = lower.chars();
    let letter = chars.next();
    let base: u64 = match chars.as_str() {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return Err(unknown_unit(unit_path, unit)),
    };
    let power = match letter {
        Some('k') => 1,
        Some('m') => 2,
        Some('g') => 3,
        Some('t') => 4,
        Some('p') => 5,
        Some('e') => 6,
        _ => return Err(unknown_unit(unit_path, unit)),
    };
    Ok(base.pow(power))
}

fn unknown_unit(path: &str, unit: &str) -> DomainError {
    DomainError::invalid(
        path,
        unit,
        "is not a unit (use b, KiB, MiB, GiB, TiB, PiB, EiB, their one-letter forms k, M, G, T, \
         P, E, or KB, MB, GB, TB, PB, EB for powers of 1000)",
    )
}

/// Parses a memory size element: `value` in `unit` (KiB when absent), returned in KiB rounded
/// up, as libvirt stores it.
pub fn parse_memory_kib(
    value_path: &str,
    value: &str,
    unit_path: &str,
    unit: Option<&str>,
) -> Result<u64, DomainError> {
    let number = parse_u64(value_path, value)?;
    let scale = match unit {
        Some(unit) => unit_bytes(unit_path, unit)?,
        None => 1024,
    };
    let bytes = number
        .checked_mul(scale)
        .filter(|&bytes| bytes <= MAX_MEMORY_BYTES)
        .ok_or_else(|| {
            DomainError::invalid(
                value_path,
                value,
                format!(
                    "{} is larger than {MAX_MEMORY_BYTES} bytes",
                    unit.unwrap_or("KiB")
                ),
            )
        })?;
    Ok(bytes.div_ceil(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kib(value: &str, unit: Option<&str>) -> Result<u64, DomainError> {
        parse_memory_kib("/m", value, "/m/@unit", unit)
    }

    #[test]
    fn units_scale_as_libvirt_defines_them() {
        let cases = [
            ("2048", None, 2048),
            ("1024", Some("b"), 1),
            ("1025", Some("bytes"), 2),
            ("1000", Some("KB"), 977),
            ("4", Some("k"), 4),
            ("4", Some("KiB"), 4),
            ("1", Some("MB"), 977),
            ("3", Some("M"), 3 << 10),
            ("3", Some("MiB"), 3 << 10),
            ("1", Some("GB"), 976_563),
            ("2", Some("G"), 2 << 20),
            ("2", Some("GiB"), 2 << 20),
            ("1", Some("TB"), 976_562_500),
            ("1", Some("T"), 1 << 30),
            ("1", Some("TiB"), 1 << 30),
            ("1", Some("gib"), 1 << 20),
            (" 7 ", Some("m"), 7 << 10),
        ];

        for (value, unit, expected) in cases {
            assert_eq!(kib(value, unit), Ok(expected), "{value} {unit:?}");
        }
    }

    #[test]
    fn bad_numbers_and_units_are_refused_with_path_and_value() {
        assert_eq!(
            kib("12x", None).unwrap_err().to_string(),
            "/m: \"12x\" is not a number"
        );
        assert!(kib("-1", None).is_err());
        assert!(kib("", None).is_err());
        assert!(kib("99999999999999999999999", None).is_err());
        assert!(kib("9000000", Some("TiB")).is_err());
        let unit = kib("1", Some("XiB")).unwrap_err();
        assert_eq!(unit.path(), "/m/@unit");
        assert!(unit.to_string().contains("\"XiB\" is not a unit"), "{unit}");
        assert!(kib("1", Some("MiBs")).is_err());
        assert!(kib("1", Some("")).is_err());
    }
}
