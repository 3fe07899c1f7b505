//! containerd runtime-v2 shim (filled by issue [4/7]).
