//! linux.resources.blockIO: v1 blkio, cgroup2 io.

use super::{Loc, Plan, Version, When};
use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

const F: &str = "linux.resources.blockIO";

/// runc's conversion of a v1 blkio weight [10, 1000] to cgroup2 io.weight [1, 10000].
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (weight.saturating_sub(10)) * 9999 / 990
}

fn check_weight(field: &str, w: u16) -> Result<()> {
    if (10..=1000).contains(&w) {
        Ok(())
    } else {
        Err(Error::invalid(field, w, "must be between 10 and 1000"))
    }
}

pub(super) fn plan(p: &mut Plan, b: &LinuxBlockIo) -> Result<()> {
    let devices = b.weight_device().as_deref().unwrap_or(&[]);
    let throttles: [(&str, &Option<Vec<LinuxThrottleDevice>>, &str, &str); 4] = [
        (
            "throttleReadBpsDevice",
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "rbps",
        ),
        (
            "throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "wbps",
        ),
        (
            "throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
        ),
        (
            "throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
        ),
    ];
    let any_throttle = throttles
        .iter()
        .any(|(_, t, _, _)| t.as_ref().is_some_and(|t| !t.is_empty()));
    if b.weight().is_none() && b.leaf_weight().is_none() && devices.is_empty() && !any_throttle {
        return Ok(());
    }
    if let Some(w) = b.weight() {
        check_weight(&format!("{F}.weight"), w)?;
    }
    if let Some(w) = b.leaf_weight() {
        check_weight(&format!("{F}.leafWeight"), w)?;
    }
    for d in devices {
        if let Some(w) = d.weight() {
            check_weight(&format!("{F}.weightDevice"), w)?;
        }
        if let Some(w) = d.leaf_weight() {
            check_weight(&format!("{F}.weightDevice.leafWeight"), w)?;
        }
    }
    let first = if b.weight().is_some() {
        "weight"
    } else if b.leaf_weight().is_some() {
        "leafWeight"
    } else if !devices.is_empty() {
        "weightDevice"
    } else {
        throttles
            .iter()
            .find(|(_, t, _, _)| t.as_ref().is_some_and(|t| !t.is_empty()))
            .map_or("throttle", |t| t.0)
    };
    let controller = if p.locate("blkio").is_some() {
        "blkio"
    } else {
        "io"
    };
    let loc = p.require(&format!("{F}.{first}"), controller)?;
    match loc.version {
        Version::V1 => v1(p, &loc, b, &throttles),
        Version::V2 => v2(p, &loc, b, &throttles),
    }
    Ok(())
}

fn v1(
    p: &mut Plan,
    loc: &Loc,
    b: &LinuxBlockIo,
    throttles: &[(&str, &Option<Vec<LinuxThrottleDevice>>, &str, &str)],
) {
    // CFQ's files if present, else BFQ's (as runc does); BFQ has no leaf weights.
    let (weight, weight_dev) = if loc.dir.join("blkio.weight").exists() {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(w) = b.weight() {
        p.push(&format!("{F}.weight"), loc, weight, w, When::Always);
    }
    if let Some(w) = b.leaf_weight() {
        p.push(
            &format!("{F}.leafWeight"),
            loc,
            "blkio.leaf_weight",
            w,
            When::Always,
        );
    }
    for d in b.weight_device().as_deref().unwrap_or(&[]) {
        if let Some(w) = d.weight() {
            p.push(
                &format!("{F}.weightDevice"),
                loc,
                weight_dev,
                format!("{}:{} {w}", d.major(), d.minor()),
                When::Always,
            );
        }
        if let Some(w) = d.leaf_weight() {
            let v = format!("{}:{} {w}", d.major(), d.minor());
            p.push(
                &format!("{F}.weightDevice.leafWeight"),
                loc,
                "blkio.leaf_weight_device",
                v,
                When::Always,
            );
        }
    }
    for (name, list, file, _) in throttles {
        for t in list.as_deref().unwrap_or(&[]) {
            p.push(
                &format!("{F}.{name}"),
                loc,
                file,
                format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                When::Always,
            );
        }
    }
}

fn v2(
    p: &mut Plan,
    loc: &Loc,
    b: &LinuxBlockIo,
    throttles: &[(&str, &Option<Vec<LinuxThrottleDevice>>, &str, &str)],
) {
    // io.bfq.weight takes v1-range weights; io.weight (iocost) needs the conversion.
    let bfq = loc.dir.join("io.bfq.weight").exists();
    let conv = |w: u16| {
        if bfq {
            w as u64
        } else {
            blkio_weight_to_io_weight(w as u64)
        }
    };
    let file = if bfq { "io.bfq.weight" } else { "io.weight" };
    if let Some(w) = b.weight() {
        p.push(&format!("{F}.weight"), loc, file, conv(w), When::Always);
    }
    if b.leaf_weight().is_some() {
        log::warn!("{F}.leafWeight has no cgroup v2 equivalent; ignored");
    }
    for d in b.weight_device().as_deref().unwrap_or(&[]) {
        if let Some(w) = d.weight() {
            p.push(
                &format!("{F}.weightDevice"),
                loc,
                file,
                format!("{}:{} {}", d.major(), d.minor(), conv(w)),
                When::Always,
            );
        }
        if d.leaf_weight().is_some() {
            log::warn!("{F}.weightDevice.leafWeight has no cgroup v2 equivalent; ignored");
        }
    }
    for (name, list, _, key) in throttles {
        for t in list.as_deref().unwrap_or(&[]) {
            // v1 uses 0 to remove a limit; io.max spells that "max".
            let rate = if t.rate() == 0 {
                "max".to_string()
            } else {
                t.rate().to_string()
            };
            p.push(
                &format!("{F}.{name}"),
                loc,
                "io.max",
                format!("{}:{} {key}={rate}", t.major(), t.minor()),
                When::Always,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn io_weight_conversion_matches_runc() {
        assert_eq!(super::blkio_weight_to_io_weight(10), 1);
        assert_eq!(super::blkio_weight_to_io_weight(500), 4950);
        assert_eq!(super::blkio_weight_to_io_weight(1000), 10000);
    }
}
