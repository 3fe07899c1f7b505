//! [`Manager::stats`]: the container's resource usage, as plain structs that mirror containerd's
//! cgroups metrics protos field for field ([`v1::Metrics`] is `io.containerd.cgroups.v1.Metrics`
//! from `cgroup1/stats/metrics.proto`, [`v2::Metrics`] is `io.containerd.cgroups.v2.Metrics`
//! from `cgroup2/stats/metrics.proto`), so a shim converts them 1:1: same message split, same
//! field names (serde names are the proto field names), same units, same "unset" values.
//!
//! Which one is returned follows the host: pure cgroup v2 gives [`Stats::V2`]; legacy and hybrid
//! give [`Stats::V1`] (on hybrid, hugetlb comes from the cgroup2 directory when the host enables
//! it there and v1 has no hugetlb hierarchy).
//!
//! A part is `None` (or an empty list) when its controller is not mounted / not enabled for the
//! container, mirroring containerd, which leaves those messages nil. A file that exists but
//! cannot be read is an error naming it; a directory that is gone is an error too (stats of a
//! deleted container are not zeros).
//!
//! # Later consumer: `runc events --stats`
//!
//! runc prints `{"type":"stats","id":ID,"data":{...}}` with its own `types.Stats` shape for
//! both cgroup versions. Everything it prints is derivable from these structs:
//!
//! | runc JSON (`data.`) | from V1 | from V2 |
//! |---|---|---|
//! | `cpu.usage.{total,kernel,user}` (ns) | `cpu.usage.{total,kernel,user}` | `cpu.{usage,system,user}_usec` × 1000 |
//! | `cpu.usage.percpu` | `cpu.usage.per_cpu` | (none on v2) |
//! | `cpu.throttling.{periods,throttledPeriods,throttledTime}` | `cpu.throttling.*` | `cpu.nr_periods`, `nr_throttled`, `throttled_usec` × 1000 |
//! | `memory.usage.{usage,limit,max,failcnt}` | `memory.usage.*` | `memory.usage`, `usage_limit`, `max_usage`, `memory_events.max` |
//! | `memory.swap` | `memory.swap` (v1 memsw = memory+swap) | runc prints `swap_usage + usage` and `swap_limit` (memsw style) |
//! | `memory.kernel`, `memory.kernelTCP` | `memory.kernel`, `memory.kernel_tcp` | (none) |
//! | `memory.cache` | `memory.cache` | `memory.file` |
//! | `memory.raw` (every memory.stat key) | the named `memory.*` counters (memory.stat keys such as `shmem`, `swap` or `workingset_*` have no proto field and are not kept) | every `memory.*` counter |
//! | `pids.{current,limit}` | `pids.*` (limit 0 = unlimited) | `pids.*` (limit `u64::MAX` = unlimited) |
//! | `blkio.ioServiceBytesRecursive` / `ioServicedRecursive` | `blkio.io_service_bytes_recursive` / `io_serviced_recursive` | one `Read`/`Write` entry per `io.usage` line from `rbytes`/`wbytes` resp. `rios`/`wios` |
//! | `hugetlb{pagesize: {usage,max,failcnt}}` | `hugetlb[]` | `hugetlb[].{current,max,failcnt}` |

pub mod v1;
pub mod v2;

use crate::error::{Error, Result};
use crate::{CgroupMode, Manager};
use serde::de::value::MapDeserializer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The container's statistics, in the shape of the cgroup version the host uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stats {
    V1(v1::Metrics),
    V2(v2::Metrics),
}

impl Manager {
    /// Reads the container's statistics: V2 on pure cgroup v2, V1 otherwise (see
    /// [`crate::stats`] for the mapping and what a missing controller gives).
    pub fn stats(&self) -> Result<Stats> {
        // A removed cgroup must not read as "all zeros".
        if let Some(d) = self.primary() {
            if !d.path.is_dir() {
                return Err(Error::Read {
                    field: FIELD.into(),
                    path: d.path.clone(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
        }
        if self.mode == CgroupMode::Unified {
            let dir = self.unified.as_ref().map(|d| d.path.clone());
            let dir = dir.ok_or_else(|| Error::unsupported(FIELD, "no cgroup2 directory"))?;
            Ok(Stats::V2(v2::read(&dir)?))
        } else {
            Ok(Stats::V1(v1::read(self)?))
        }
    }
}

pub(crate) const FIELD: &str = "stats";

/// The file's content, `None` when it does not exist (controller not there).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            field: FIELD.into(),
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn parse_err(path: &Path, content: &str) -> Error {
    Error::Parse {
        field: FIELD.into(),
        path: path.to_path_buf(),
        content: content.chars().take(200).collect(),
    }
}

/// A single-number file ("123"); the literal "max" (no limit) becomes `max_as`, which is
/// u64::MAX for v2 files and 0 for v1 `pids.max`, as containerd reports them.
pub(crate) fn read_u64(path: &Path, max_as: u64) -> Result<Option<u64>> {
    let Some(content) = read_opt(path)? else {
        return Ok(None);
    };
    let t = content.trim();
    if t == "max" {
        return Ok(Some(max_as));
    }
    t.parse().map(Some).map_err(|_| parse_err(path, t))
}

/// Fills a metrics struct from `(key, value)` pairs by field name (or serde alias), so one
/// parser serves every flat keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`, `io.stat` lines, ...) of both versions. Keys without a field are
/// ignored (newer kernels add keys); missing fields stay 0.
pub(crate) fn from_pairs<'a, T: DeserializeOwned>(
    path: &Path,
    pairs: impl Iterator<Item = (&'a str, u64)>,
) -> Result<T> {
    let de = MapDeserializer::<_, serde::de::value::Error>::new(pairs);
    T::deserialize(de).map_err(|e| Error::Parse {
        field: FIELD.into(),
        path: path.to_path_buf(),
        content: e.to_string(),
    })
}

/// `key value` lines. Lines whose value is not a number are skipped with a debug log (a
/// future kernel's text key must not break stats).
pub(crate) fn keyed_pairs<'a>(
    path: &'a Path,
    content: &'a str,
) -> impl Iterator<Item = (&'a str, u64)> {
    content.lines().filter_map(move |l| {
        let (k, v) = l.split_once(' ')?;
        match v.trim().parse() {
            Ok(v) => Some((k, v)),
            Err(_) => {
                log::debug!("{}: skipping line {l:?}", path.display());
                None
            }
        }
    })
}

/// A flat keyed file read into `T`; `None` when the file does not exist.
pub(crate) fn read_keyed<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    read_keyed_except(path, &[])
}

/// [`read_keyed`] ignoring the keys `skip`: the names of fields that other files fill, which
/// the file may also use for something else (v1 memory.stat has a `swap` byte counter, while
/// the proto's `swap` is the memsw usage/limit entry).
pub(crate) fn read_keyed_except<T: DeserializeOwned>(
    path: &Path,
    skip: &[&str],
) -> Result<Option<T>> {
    match read_opt(path)? {
        Some(c) => {
            let pairs = keyed_pairs(path, &c).filter(|(k, _)| !skip.contains(k));
            from_pairs(path, pairs).map(Some)
        }
        None => Ok(None),
    }
}

/// `k=v` words (io.stat, rdma, PSI lines) as pairs; words without '=' are skipped.
pub(crate) fn eq_pairs(words: &str) -> impl Iterator<Item = (&str, &str)> {
    words.split_whitespace().filter_map(|w| w.split_once('='))
}

/// `MAJ:MIN` of io.stat / blkio lines.
pub(crate) fn major_minor(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Huge page sizes of this kernel in the names the hugetlb files use ("2MB", "1GB"), from
/// /sys/kernel/mm/hugepages (read once: it cannot change while the system runs).
pub(crate) fn hugepage_sizes() -> &'static [String] {
    static SIZES: OnceLock<Vec<String>> = OnceLock::new();
    SIZES.get_or_init(|| {
        let mut out: Vec<(u64, String)> = std::fs::read_dir("/sys/kernel/mm/hugepages")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let kb: u64 = name
                    .strip_prefix("hugepages-")?
                    .strip_suffix("kB")?
                    .parse()
                    .ok()?;
                Some((kb, page_size_name(kb)))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, n)| n).collect()
    })
}

/// The kernel's hugetlb file naming (mm/hugetlb_cgroup.c): the largest unit that divides.
fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

/// The hugetlb files of one page size in `dir`, when that controller is present there.
pub(crate) fn hugetlb_file(dir: &Path, size: &str, file: &str) -> PathBuf {
    dir.join(format!("hugetlb.{size}.{file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct T {
        a: u64,
        #[serde(alias = "bee")]
        b: u64,
    }

    #[test]
    fn keyed_into_struct_ignores_unknown_and_text_keys() {
        let p = Path::new("/x");
        let t: T = from_pairs(p, keyed_pairs(p, "a 1\nzzz 5\nbee 7\ntext abc\n")).unwrap();
        assert_eq!(t, T { a: 1, b: 7 });
        let t: T = from_pairs(p, keyed_pairs(p, "")).unwrap();
        assert_eq!(t, T::default());
    }

    #[test]
    fn page_size_names() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1048576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
    }
}
