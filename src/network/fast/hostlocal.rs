//! host-local IPAM done in process, in host-local's own on-disk format and locking protocol
//! (containernetworking/plugins v1.1.1 `plugins/ipam/host-local`), so that a real host-local
//! running at the same time on the same network never hands out the same address:
//!
//! - `<dataDir>/<network>/` (mode 0755) holds one file per address, named by the address,
//!   containing `<id>\r\n<ifname>` (mode 0644, created with O_EXCL);
//! - `last_reserved_ip.<rangeIndex>` holds the last address handed out from that range set;
//! - `lock` (created mode 0750, as go-filemutex does) is `flock(LOCK_EX)`ed around every
//!   allocation and release.
//!
//! Allocation follows host-local's `RangeIter`: start after the last reserved address of the
//! range set (when it is still inside it), walk the ranges round-robin, skip each range's
//! gateway, stop when back at the start.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::netlink::ip::{from_int, to_int};

/// host-local's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LAST_IP_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";

/// One canonicalised range (host-local `Range.Canonicalize`): addresses as integers of one
/// family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub v6: bool,
    pub subnet: u128,
    pub prefix: u8,
    pub start: u128,
    pub end: u128,
    pub gateway: u128,
}

/// A range's subnet as host-local accepts it: a CIDR without host bits, with room for at
/// least two addresses; its network as an integer, its prefix, and whether it is IPv6.
fn parse_subnet(subnet: &str) -> Result<(u128, u8, bool), String> {
    let (addr, prefix) = subnet
        .split_once('/')
        .ok_or_else(|| format!("subnet {subnet:?} is not a CIDR"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("subnet {subnet:?} is not a CIDR"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("subnet {subnet:?} is not a CIDR"))?;
    let v6 = addr.is_ipv6();
    let bits: u8 = if v6 { 128 } else { 32 };
    if prefix > bits {
        return Err(format!("subnet {subnet:?} has a bad prefix length"));
    }
    if prefix > bits - 2 {
        return Err(format!("Network {subnet} too small to allocate from"));
    }
    let value = to_int(addr);
    if value & host_mask(v6, prefix) != 0 {
        return Err(format!("subnet {subnet} has host bits set"));
    }
    Ok((value, prefix, v6))
}

/// The host bits of a `prefix` in the family (the prefix is at most the family's length).
fn host_mask(v6: bool, prefix: u8) -> u128 {
    let bits: u8 = if v6 { 128 } else { 32 };
    if bits - prefix == 128 {
        u128::MAX
    } else {
        (1u128 << (bits - prefix)) - 1
    }
}

/// An optional address of a range (`what` names the field), which must be of the subnet's
/// family.
fn address_in(what: &str, s: Option<&str>, v6: bool, subnet: &str) -> Result<Option<u128>, String> {
    let Some(s) = s else {
        return Ok(None);
    };
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an IP"))?;
    if ip.is_ipv6() != v6 {
        return Err(format!("{what} {s} is not in network {subnet}"));
    }
    Ok(Some(to_int(ip)))
}

impl Range {
    /// Parses and canonicalises one `ranges` entry the way host-local does.
    pub fn parse(
        subnet: &str,
        start: Option<&str>,
        end: Option<&str>,
        gateway: Option<&str>,
    ) -> Result<Range, String> {
        let (value, prefix, v6) = parse_subnet(subnet)?;
        let host_mask = host_mask(v6, prefix);
        let parse_in = |what: &str, s: Option<&str>| address_in(what, s, v6, subnet);
        let in_subnet = |x: u128| x & !host_mask == value;
        let gateway = parse_in("gateway", gateway)?.unwrap_or(value + 1);
        let start = parse_in("rangeStart", start)?.unwrap_or(value + 1);
        if !in_subnet(start) {
            return Err(format!("RangeStart not in network {subnet}"));
        }
        // host-local's lastIP: the broadcast address minus one for IPv4, the last for IPv6.
        let last = if v6 {
            value | host_mask
        } else {
            (value | host_mask) - 1
        };
        let end = parse_in("rangeEnd", end)?.unwrap_or(last);
        if !in_subnet(end) || end < start {
            return Err(format!("RangeEnd not in network {subnet}"));
        }
        Ok(Range {
            v6,
            subnet: value,
            prefix,
            start,
            end,
            gateway,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.v6 && {
            let x = to_int(ip);
            x >= self.start && x <= self.end
        }
    }

    pub fn ip(&self, x: u128) -> IpAddr {
        from_int(x, self.v6)
    }

    /// "start-end", as host-local prints a range in its errors.
    pub fn describe(&self) -> String {
        format!("{}-{}", self.ip(self.start), self.ip(self.end))
    }
}

/// A range set: one `ranges` entry, all one family, allocated from as one pool.
pub type RangeSet = Vec<Range>;

fn describe(set: &RangeSet) -> String {
    set.iter()
        .map(Range::describe)
        .collect::<Vec<_>>()
        .join(",")
}

/// One allocated address: the address, its range's prefix length and gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
}

/// host-local's store for one network: `<dataDir>/<network>`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("host-local store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "failed to allocate for range {index}: no IP addresses available in range set: {ranges}"
    )]
    Exhausted { index: usize, ranges: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IpamError + '_ {
    move |source| IpamError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Store {
    pub fn new(data_dir: &Path, network: &str) -> Store {
        Store {
            dir: data_dir.join(network),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `disk.New` + `Lock`: make the dir, open (creating) the lock file, flock it.
    fn lock(&self) -> Result<Flock<File>, IpamError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .mode(0o750)
            .open(&path)
            .map_err(io_err(&path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| IpamError::Io {
            path,
            source: e.into(),
        })
    }

    /// Allocates one address from each range set, in order, under one hold of the lock.
    /// On failure, what was reserved by this call is released again.
    pub fn allocate(
        &self,
        id: &str,
        ifname: &str,
        sets: &[RangeSet],
    ) -> Result<Vec<Allocation>, IpamError> {
        let _lock = self.lock()?;
        let mut done: Vec<Allocation> = Vec::new();
        for (index, set) in sets.iter().enumerate() {
            match self.allocate_one(id, ifname, set, index) {
                Ok(a) => done.push(a),
                Err(e) => {
                    for a in &done {
                        let _ = std::fs::remove_file(self.dir.join(a.ip.to_string()));
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    fn allocate_one(
        &self,
        id: &str,
        ifname: &str,
        set: &RangeSet,
        index: usize,
    ) -> Result<Allocation, IpamError> {
        let last = self.last_reserved(index);
        let mut iter = RangeIter::new(set, last);
        while let Some((range, x)) = iter.next() {
            let ip = set[range].ip(x);
            if self.reserve(id, ifname, ip, index)? {
                return Ok(Allocation {
                    ip,
                    prefix: set[range].prefix,
                    gateway: set[range].ip(set[range].gateway),
                });
            }
        }
        Err(IpamError::Exhausted {
            index,
            ranges: describe(set),
        })
    }

    fn last_reserved(&self, index: usize) -> Option<IpAddr> {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{LAST_IP_PREFIX}{index}"))).ok()?;
        // Go's net.ParseIP: no trimming.
        text.parse().ok()
    }

    /// `Store.Reserve`: an exclusive create of the address file; false when it exists.
    ///
    /// Unlike host-local (O_EXCL create, then write), the file appears with its content
    /// already in it: written to a temporary name, then hard-linked to the address (link(2)
    /// fails with EEXIST like O_EXCL). A crash can so never leave an empty address file that
    /// no DEL would match; a leftover temporary holds `<id>\r\n<ifname>` and is removed by the
    /// container's DEL like the address file, and host-local ignores names that are not IPs.
    fn reserve(&self, id: &str, ifname: &str, ip: IpAddr, index: usize) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        if path.exists() {
            return Ok(false);
        }
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|e| io_err(&path)(io::Error::other(e.to_string())))?;
        let tmp = self.dir.join(format!(
            ".crisp-reserve-{}",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| f.write_all(content.as_bytes()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err(&path)(e)),
        }
        let last = self.dir.join(format!("{LAST_IP_PREFIX}{index}"));
        write_mode(&last, ip.to_string().as_bytes(), 0o644).map_err(io_err(&last))?;
        Ok(true)
    }

    /// `ReleaseByID` for every range set: removes each file whose trimmed content is
    /// `<id>\r\n<ifname>`, or, when none is, the old format `<id>`. Missing dir is fine.
    pub fn release(&self, id: &str, ifname: &str) -> Result<(), IpamError> {
        let _lock = self.lock()?;
        let current = format!("{}{LINE_BREAK}{ifname}", id.trim());
        if !self.release_matching(&current)? {
            self.release_matching(id.trim())?;
        }
        Ok(())
    }

    fn release_matching(&self, want: &str) -> Result<bool, IpamError> {
        let mut found = false;
        let entries = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for entry in entries.flatten() {
            let path = entry.path();
            // host-local's filepath.Walk skips what it cannot read, as this does.
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            if String::from_utf8_lossy(&data).trim() == want && std::fs::remove_file(&path).is_ok()
            {
                found = true;
            }
        }
        Ok(found)
    }

    /// The addresses recorded for `id`/`ifname` (for tests and audits).
    pub fn addresses_of(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        let want = format!("{}{LINE_BREAK}{ifname}", id.trim());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                std::fs::read(e.path()).is_ok_and(|d| String::from_utf8_lossy(&d).trim() == want)
            })
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }
}

/// ioutil.WriteFile: create or truncate with `mode` (before umask), write.
fn write_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}

/// host-local's `RangeIter`, step for step.
struct RangeIter<'a> {
    set: &'a RangeSet,
    range: usize,
    cur: Option<u128>,
    start: Option<u128>,
}

impl<'a> RangeIter<'a> {
    fn new(set: &'a RangeSet, last: Option<IpAddr>) -> Self {
        if let Some(last) = last {
            if let Some(i) = set.iter().position(|r| r.contains(last)) {
                return RangeIter {
                    set,
                    range: i,
                    cur: Some(to_int(last)),
                    start: None,
                };
            }
        }
        RangeIter {
            set,
            range: 0,
            cur: None,
            start: Some(set[0].start),
        }
    }

    /// The next candidate: (range index, address), or `None` once every address was tried.
    fn next(&mut self) -> Option<(usize, u128)> {
        loop {
            let r = &self.set[self.range];
            let Some(cur) = self.cur else {
                self.cur = Some(r.start);
                self.start = Some(r.start);
                if r.start == r.gateway {
                    continue;
                }
                return Some((self.range, r.start));
            };
            let next = if cur == r.end {
                self.range = (self.range + 1) % self.set.len();
                self.set[self.range].start
            } else {
                cur + 1
            };
            self.cur = Some(next);
            match self.start {
                None => self.start = Some(next),
                Some(s) if s == next => return None,
                Some(_) => {}
            }
            if next == self.set[self.range].gateway {
                continue;
            }
            return Some((self.range, next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str) -> Range {
        Range::parse(subnet, None, None, None).expect("valid range")
    }

    #[test]
    fn canonical_range_matches_host_local_defaults() {
        let r = range("10.1.0.0/24");
        assert_eq!(r.ip(r.start).to_string(), "10.1.0.1");
        assert_eq!(r.ip(r.end).to_string(), "10.1.0.254");
        assert_eq!(r.ip(r.gateway).to_string(), "10.1.0.1");
        let r6 = range("fd00:1::/120");
        assert_eq!(r6.ip(r6.end).to_string(), "fd00:1::ff");
        assert!(Range::parse("10.1.0.0/31", None, None, None).is_err());
        assert!(Range::parse("10.1.0.1/24", None, None, None).is_err());
    }

    #[test]
    fn allocation_skips_the_gateway_round_robins_and_releases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path(), "net");
        let sets = vec![vec![range("10.1.0.0/29")]];
        let a = store.allocate("id1", "eth0", &sets).expect("first");
        assert_eq!(a[0].ip.to_string(), "10.1.0.2");
        let b = store.allocate("id2", "eth0", &sets).expect("second");
        assert_eq!(b[0].ip.to_string(), "10.1.0.3");
        store.release("id1", "eth0").expect("release");
        // Round robin: after .3 comes .4, not the freed .2.
        let c = store.allocate("id3", "eth0", &sets).expect("third");
        assert_eq!(c[0].ip.to_string(), "10.1.0.4");
        let content = std::fs::read(dir.path().join("net/10.1.0.4")).expect("file");
        assert_eq!(content, b"id3\r\neth0");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("net/last_reserved_ip.0")).expect("last"),
            "10.1.0.4"
        );
        for id in ["a", "b", "c"] {
            store.allocate(id, "eth0", &sets).expect("fill");
        }
        // .1 is the gateway and .2-.6 are taken (c wrapped round to .2): full.
        let err = store.allocate("x", "eth0", &sets).expect_err("full");
        assert!(
            err.to_string().contains("no IP addresses available"),
            "{err}"
        );
    }

    #[test]
    fn invalid_ranges_say_why() {
        let cases = [
            ("10.1.0.0", None, None, None, "is not a CIDR"),
            ("10.1.0.0/x", None, None, None, "is not a CIDR"),
            ("10.1.0.0/33", None, None, None, "bad prefix length"),
            (
                "10.1.0.0/31",
                None,
                None,
                None,
                "too small to allocate from",
            ),
            ("10.1.0.1/24", None, None, None, "has host bits set"),
            (
                "10.1.0.0/24",
                Some("x"),
                None,
                None,
                "rangeStart \"x\" is not an IP",
            ),
            (
                "10.1.0.0/24",
                Some("fd00::1"),
                None,
                None,
                "is not in network",
            ),
            (
                "10.1.0.0/24",
                Some("10.2.0.1"),
                None,
                None,
                "RangeStart not in",
            ),
            (
                "10.1.0.0/24",
                Some("10.1.0.9"),
                Some("10.1.0.5"),
                None,
                "RangeEnd not in",
            ),
            (
                "10.1.0.0/24",
                None,
                None,
                Some("fd00::1"),
                "gateway fd00::1 is not in",
            ),
        ];
        for (subnet, start, end, gw, want) in cases {
            let why = Range::parse(subnet, start, end, gw).expect_err(want);
            assert!(why.contains(want), "{subnet} {start:?} {end:?}: {why}");
        }
    }
}
