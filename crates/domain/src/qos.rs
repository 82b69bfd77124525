//! Rate limits: a disk's `<iotune>` and an interface's `<bandwidth>`.
//!
//! Only what oxvmm's token buckets (a second's worth, no extra burst) can express is accepted;
//! libvirt's read/write splits, `*_max` bursts, `peak`, `burst` and `floor` are refused with
//! their path rather than dropped, so a definition never promises a limit that is not applied.

use crate::dom::Node;
use crate::error::DomainError;
use crate::model::{Bandwidth, IoTune};
use crate::units::{parse_u32, parse_u64};

/// The `<iotune>` children that are supported.
const IOTUNE_ELEMENTS: &[&str] = &["total_bytes_sec", "total_iops_sec"];

/// Parses a disk's `<iotune>` (absent or empty: no limits).
pub fn parse_iotune(disk: Node<'_>) -> Result<IoTune, DomainError> {
    let Some(iotune) = disk.child("iotune")? else {
        return Ok(IoTune::default());
    };
    let iotune = iotune.node();
    iotune.allow(&[], IOTUNE_ELEMENTS)?;
    Ok(IoTune {
        total_bytes_sec: iotune_value(iotune, "total_bytes_sec")?,
        total_iops_sec: iotune_value(iotune, "total_iops_sec")?,
    })
}

/// One limit: an unsigned number; 0 is libvirt's "no limit".
fn iotune_value(iotune: Node<'_>, name: &str) -> Result<Option<u64>, DomainError> {
    let Some(element) = iotune.child(name)? else {
        return Ok(None);
    };
    let element = element.node();
    element.allow_text(&[])?;
    let value = parse_u64(element.path(), element.raw_text())?;
    Ok((value != 0).then_some(value))
}

/// Parses an interface's `<bandwidth>` (absent or empty: no limits).
pub fn parse_bandwidth(interface: Node<'_>) -> Result<Bandwidth, DomainError> {
    let Some(bandwidth) = interface.child("bandwidth")? else {
        return Ok(Bandwidth::default());
    };
    let bandwidth = bandwidth.node();
    bandwidth.allow(&[], &["inbound", "outbound"])?;
    Ok(Bandwidth {
        inbound_kib: direction_average(bandwidth, "inbound")?,
        outbound_kib: direction_average(bandwidth, "outbound")?,
    })
}

/// `<inbound average=...>` or `<outbound average=...>`: KiB/s, 1 to 4294967295 as libvirt's
/// schema allows.
fn direction_average(bandwidth: Node<'_>, name: &str) -> Result<Option<u32>, DomainError> {
    let Some(direction) = bandwidth.child(name)? else {
        return Ok(None);
    };
    let direction = direction.node();
    // peak, burst and floor are refused here: oxvmm's buckets have none of them.
    direction.allow(&["average"], &[])?;
    let path = direction.attr_path("average");
    let text = direction.required_attr("average")?;
    match parse_u32(&path, text)? {
        0 => Err(DomainError::invalid(
            &path,
            text,
            "is not a rate (1 to 4294967295 KiB/s)",
        )),
        average => Ok(Some(average)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dom::{Located, parse_document};

    fn iotune_of(xml: &str) -> Result<IoTune, DomainError> {
        let root = parse_document(xml)?;
        parse_iotune(Located::root(&root).node())
    }

    fn bandwidth_of(xml: &str) -> Result<Bandwidth, DomainError> {
        let root = parse_document(xml)?;
        parse_bandwidth(Located::root(&root).node())
    }

    #[test]
    fn iotune_totals_parse_and_zero_means_no_limit() {
        let both = iotune_of(
            "<disk><iotune><total_bytes_sec> 1048576 </total_bytes_sec>\
             <total_iops_sec>500</total_iops_sec></iotune></disk>",
        )
        .unwrap();
        let zero =
            iotune_of("<disk><iotune><total_iops_sec>0</total_iops_sec></iotune></disk>").unwrap();

        assert_eq!(both.total_bytes_sec, Some(1_048_576));
        assert_eq!(both.total_iops_sec, Some(500));
        assert!(zero.is_empty());
        assert!(iotune_of("<disk/>").unwrap().is_empty());
    }

    #[test]
    fn iotune_splits_and_bad_numbers_are_refused_by_path() {
        let split = iotune_of("<disk><iotune><read_bytes_sec>1</read_bytes_sec></iotune></disk>");
        let bad = iotune_of("<disk><iotune><total_iops_sec>-1</total_iops_sec></iotune></disk>");

        assert_eq!(
            split.unwrap_err().to_string(),
            "unsupported element /disk/iotune/read_bytes_sec"
        );
        assert_eq!(
            bad.unwrap_err().to_string(),
            "/disk/iotune/total_iops_sec: \"-1\" is not a number"
        );
    }

    #[test]
    fn bandwidth_averages_parse_and_peak_burst_floor_are_refused() {
        let both = bandwidth_of(
            "<interface><bandwidth><inbound average='1000'/><outbound average='1000'/>\
             </bandwidth></interface>",
        )
        .unwrap();

        assert_eq!(both.inbound_kib, Some(1000));
        assert_eq!(both.outbound_kib, Some(1000));
        assert!(
            bandwidth_of("<interface><bandwidth/></interface>")
                .unwrap()
                .is_empty()
        );
        for (attr, xml) in [
            ("peak", "<inbound average='1' peak='2'/>"),
            ("burst", "<outbound average='1' burst='2'/>"),
            ("floor", "<inbound average='1' floor='2'/>"),
        ] {
            let error = bandwidth_of(&format!(
                "<interface><bandwidth>{xml}</bandwidth></interface>"
            ))
            .unwrap_err();
            assert!(error.path().ends_with(&format!("/@{attr}")), "{error}");
        }
    }

    #[test]
    fn bandwidth_average_must_be_a_positive_32_bit_rate() {
        let of = |average: &str| {
            bandwidth_of(&format!(
                "<interface><bandwidth><inbound average='{average}'/></bandwidth></interface>"
            ))
        };

        assert_eq!(of("4294967295").unwrap().inbound_kib, Some(u32::MAX));
        assert!(of("0").unwrap_err().to_string().contains("is not a rate"));
        assert!(
            of("4294967296")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert_eq!(
            bandwidth_of("<interface><bandwidth><inbound/></bandwidth></interface>")
                .unwrap_err()
                .to_string(),
            "missing attribute /interface/bandwidth/inbound/@average"
        );
    }
}
