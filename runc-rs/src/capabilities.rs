//! The five capability sets of the container process.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("process.capabilities.{set}: {source}")]
    Apply {
        set: &'static str,
        source: caps::errors::CapsError,
    },
}

/// The capabilities the running kernel knows (probed once: each probe is a
/// prctl per capability).
fn supported() -> &'static CapsHashSet {
    static SUPPORTED: std::sync::OnceLock<CapsHashSet> = std::sync::OnceLock::new();
    SUPPORTED.get_or_init(caps::runtime::thread_all_supported)
}

fn convert(set: &Option<Capabilities>) -> CapsHashSet {
    let mut out = HashSet::new();
    for c in set.iter().flatten() {
        match Cap::from_str(&format!("CAP_{c}")) {
            // Capabilities the running kernel does not know are skipped, as runc does.
            Ok(cap) if supported().contains(&cap) => {
                out.insert(cap);
            }
            _ => log::warn!("ignoring unknown or unsupported capability {c}"),
        }
    }
    out
}

/// Drops from the bounding set everything not listed. Runs while still
/// root (needs CAP_SETPCAP) and before changing uid.
pub fn drop_bounding(c: &LinuxCapabilities) -> Result<(), CapsError> {
    let keep = convert(c.bounding());
    for &cap in supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapsError::Apply {
                set: "bounding",
                source,
            })?;
        }
    }
    Ok(())
}

/// Sets effective, permitted, inheritable and ambient. Runs after the uid
/// change (with PR_SET_KEEPCAPS so that permitted survived it).
pub fn apply(c: &LinuxCapabilities) -> Result<(), CapsError> {
    let permitted = convert(c.permitted());
    let effective = convert(c.effective());
    let inheritable = convert(c.inheritable());
    // Order matters: permitted may only shrink, effective must stay within it.
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(|source| CapsError::Apply {
        set: "inheritable",
        source,
    })?;
    caps::set(
        None,
        CapSet::Effective,
        &effective.intersection(&permitted).copied().collect(),
    )
    .map_err(|source| CapsError::Apply {
        set: "effective",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|source| CapsError::Apply {
        set: "permitted",
        source,
    })?;
    caps::set(None, CapSet::Effective, &effective).map_err(|source| CapsError::Apply {
        set: "effective",
        source,
    })?;
    let ambient = convert(c.ambient());
    caps::clear(None, CapSet::Ambient).ok();
    for cap in ambient {
        // An ambient cap needs to be permitted and inheritable; runc ignores failures here.
        if let Err(e) = caps::raise(None, CapSet::Ambient, cap) {
            log::debug!("cannot raise ambient capability {cap}: {e}");
        }
    }
    Ok(())
}

/// Every capability the kernel knows, as runc's `features` lists them.
pub fn known() -> Vec<String> {
    let mut v: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}
