//! Mount options as the runtime-spec writes them, split into mount flags,
//! propagation changes and filesystem data, with runc's vocabulary.

use nix::mount::MsFlags;

#[derive(Debug, Clone)]
pub struct ParsedOptions {
    pub flags: MsFlags,
    /// Flags the options explicitly cleared (`rw`, `suid`, ...).
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
}

impl ParsedOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn data_string(&self) -> Option<String> {
        if self.data.is_empty() {
            None
        } else {
            Some(self.data.join(","))
        }
    }
}

pub fn parse(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: vec![],
        data: vec![],
    };
    for o in options {
        let (set, clear, prop) = match o.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty(), None),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), None),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, None),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), None),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, None),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), None),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, None),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), None),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, None),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), None),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, None),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), None),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty(), None),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty(), None),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK, None),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, None),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), None),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME, None),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), None),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), None),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty(), None),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), None),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, None),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), None),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME, None),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty(), None),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT, None),
            "private" => (
                MsFlags::empty(),
                MsFlags::empty(),
                Some(MsFlags::MS_PRIVATE),
            ),
            "rprivate" => (
                MsFlags::empty(),
                MsFlags::empty(),
                Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            ),
            "shared" => (MsFlags::empty(), MsFlags::empty(), Some(MsFlags::MS_SHARED)),
            "rshared" => (
                MsFlags::empty(),
                MsFlags::empty(),
                Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            ),
            "slave" => (MsFlags::empty(), MsFlags::empty(), Some(MsFlags::MS_SLAVE)),
            "rslave" => (
                MsFlags::empty(),
                MsFlags::empty(),
                Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            ),
            "unbindable" => (
                MsFlags::empty(),
                MsFlags::empty(),
                Some(MsFlags::MS_UNBINDABLE),
            ),
            "runbindable" => (
                MsFlags::empty(),
                MsFlags::empty(),
                Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            ),
            _ => {
                p.data.push(o.clone());
                continue;
            }
        };
        p.flags.insert(set);
        p.flags.remove(clear);
        p.cleared.insert(clear);
        if let Some(pr) = prop {
            p.propagation.push(pr);
        }
    }
    p
}

/// The propagation named by `linux.rootfsPropagation`.
pub fn propagation(name: &str) -> Option<MsFlags> {
    parse(&[name.to_owned()]).propagation.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_flags_propagation_and_data() {
        let p = parse(&[
            "rbind".into(),
            "ro".into(),
            "rprivate".into(),
            "mode=755".into(),
            "size=1m".into(),
        ]);
        assert!(p.is_bind());
        assert!(p.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REC));
        assert_eq!(p.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(p.data_string().as_deref(), Some("mode=755,size=1m"));
        let q = parse(&["ro".into(), "rw".into()]);
        assert!(!q.flags.contains(MsFlags::MS_RDONLY));
    }
}
