//! The cold-start snapshot: a signed file of the routing table and the live API keys,
//! from which an instance started while its database is unreachable serves `resolve`
//! and authenticates keys.
//!
//! # Format (version 1)
//!
//! ```text
//! traffic-manager snapshot version=1 store=<id> written_at=<time> routes=<n> services=<n> keys=<n> payload=<bytes>\n
//! <payload: exactly `payload` bytes of JSON>\n
//! hmac-sha256=<64 lowercase hex digits>\n
//! ```
//!
//! - The header is one line of ASCII, its fields in this order, one space apart. The
//!   store id (chosen by the caller, e.g. a hash naming the database) is 1 to 256
//!   visible ASCII characters, no spaces; `written_at` is RFC 3339 in UTC; the counts are
//!   those of the payload's three arrays.
//! - The payload is one JSON object, `{"routes":[..],"services":[..],"keys":[..]}`:
//!   a route is `{"id","tenant","service","env","version","url","weight","revision",
//!   "healthy","last_healthy"}`; a service `{"tenant","service","env","generation",
//!   "policy"}`, the policy in its stored form (a string of JSON, as the `services`
//!   table keeps it); a key `{"id","name","role","tenant","secret_hash","created_at"}`,
//!   `tenant` null for an admin key and `secret_hash` the hex SHA-256 of the secret.
//!   Secrets themselves are never written (the file is still mode 0600).
//! - The last line is the HMAC-SHA256, keyed with the [`SnapshotKey`], of every byte
//!   before it: the header line, the payload and its newline.
//!
//! Reading refuses a file unless, in this order: it starts with the magic and its
//! version is this one (checked before the signature, as another version may be signed
//! differently: an altered version number is refused as unsupported); its signature
//! verifies (compared in constant time); its store id is the reader's (a file copied
//! from another deployment is `Foreign`, even when signed with the same key); the
//! payload has the length and counts the header says; and every route, service and key
//! in it parses into domain types, checked as when read from the database. Nothing of
//! the payload is parsed before the signature has verified.
//!
//! Writing is atomic: a new temporary file (`.<name>.tmp-*`, never an existing path nor
//! a symlink) in the same directory is written, fsync'd, renamed over the snapshot and
//! the directory fsync'd, so a reader sees the previous snapshot or the new one, never
//! part of one. Temporary files left by a crash are removed by a later write once an hour
//! old. The payload is streamed in pieces of about 1 MiB, never held whole: serialized
//! twice, the first time only to measure the length the header gives.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tm_domain::{
    EnvName, Grant, GroupKey, Health, KeyId, Role, RouteId, SecretHash, ServedRoute, ServiceFacts,
    ServiceName, TenantId, UpstreamUrl, Version, Weight,
};

use crate::KeyRecord;

/// The version of the format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The fewest bytes a [`SnapshotKey`] has.
pub const MIN_SNAPSHOT_KEY_LEN: usize = 32;

const MAGIC: &str = "traffic-manager snapshot";
const SIGNATURE_PREFIX: &[u8] = b"hmac-sha256=";
/// `hmac-sha256=` + 64 hex digits + `\n`.
const TRAILER_LEN: usize = SIGNATURE_PREFIX.len() + 64 + 1;
/// The header is looked for in this many bytes at most.
const MAX_HEADER_LEN: usize = 1024;
const MAX_STORE_ID_LEN: usize = 256;
/// A temporary file this old is left over from a crash, not being written.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// The payload is written in pieces of about this many bytes.
const CHUNK: usize = 1 << 20;

type HmacSha256 = Hmac<Sha256>;

/// Standard base64, the padding optional, as operators paste keys.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What an instance needs to serve resolve and authenticate keys without its database.
#[derive(Clone, Debug)]
pub struct ColdSnapshot {
    pub written_at: DateTime<Utc>,
    /// The active routes, with their health.
    pub routes: Vec<ServedRoute>,
    /// The generation and policy of each service that has routes.
    pub services: Vec<(GroupKey, ServiceFacts)>,
    /// The live API keys: hashes only, never secrets.
    pub keys: Vec<KeyRecord>,
}

/// Field by field (`ServedRoute` has no `PartialEq`).
impl PartialEq for ColdSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.written_at == other.written_at
            && self.routes.len() == other.routes.len()
            && self
                .routes
                .iter()
                .zip(&other.routes)
                .all(|(a, b)| same_route(a, b))
            && self.services == other.services
            && self.keys == other.keys
    }
}

fn same_route(a: &ServedRoute, b: &ServedRoute) -> bool {
    a.id == b.id
        && a.tenant == b.tenant
        && a.service == b.service
        && a.env == b.env
        && a.version == b.version
        && a.url == b.url
        && a.weight == b.weight
        && a.revision == b.revision
        && a.health == b.health
}

/// The key snapshots are signed with: at least [`MIN_SNAPSHOT_KEY_LEN`] bytes, wiped
/// when dropped. `Debug` never shows it.
pub struct SnapshotKey(SecretSlice<u8>);

impl SnapshotKey {
    pub fn new(bytes: Vec<u8>) -> Result<Self, ColdSnapshotError> {
        let len = bytes.len();
        // Wrapped first, so that a refused key is wiped too.
        let key = Self(bytes.into());
        if len < MIN_SNAPSHOT_KEY_LEN {
            return Err(ColdSnapshotError::InvalidKey(format!(
                "a snapshot key must be at least {MIN_SNAPSHOT_KEY_LEN} bytes, not {len}"
            )));
        }
        Ok(key)
    }

    /// A key given as standard base64 (padding optional, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, ColdSnapshotError> {
        // The decoder's message could quote part of the key: not repeated.
        let bytes = KEY_BASE64.decode(text.trim()).map_err(|_| {
            ColdSnapshotError::InvalidKey("a snapshot key must be standard base64".to_owned())
        })?;
        Self::new(bytes)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.0.expose_secret()).expect("HMAC takes keys of any length")
    }
}

impl fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotKey(..)")
    }
}

/// Why a snapshot could not be written or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ColdSnapshotError {
    #[error("there is no snapshot file")]
    Missing,
    /// Reading or writing failed (the message includes the I/O error's).
    #[error("snapshot file I/O failed: {0}")]
    Io(io::Error),
    /// Not a snapshot, truncated, damaged, or (once authenticated) content the domain
    /// refuses.
    #[error("the snapshot file is malformed: {0}")]
    Malformed(String),
    /// Signed with another key, or altered since it was signed.
    #[error("the snapshot's signature does not verify: it was signed with another key or altered")]
    BadSignature,
    /// Correctly signed, but for another store: another deployment's snapshot.
    #[error("the snapshot was written for another store ({written_for:?})")]
    Foreign { written_for: String },
    #[error("the snapshot is of format version {0}; this build reads version {SNAPSHOT_VERSION}")]
    UnsupportedVersion(u32),
    #[error("invalid snapshot key: {0}")]
    InvalidKey(String),
    #[error(
        "invalid store id: it must be 1 to {MAX_STORE_ID_LEN} visible ASCII characters, no spaces"
    )]
    InvalidStoreId,
}

impl From<io::Error> for ColdSnapshotError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

fn malformed(why: impl Into<String>) -> ColdSnapshotError {
    ColdSnapshotError::Malformed(why.into())
}

fn check_store_id(id: &str) -> Result<(), ColdSnapshotError> {
    if id.is_empty() || id.len() > MAX_STORE_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ColdSnapshotError::InvalidStoreId);
    }
    Ok(())
}

/// Writes `snapshot` to `path` atomically (a new temporary file in the same directory,
/// fsync'd, renamed over `path`, then the directory fsync'd), mode 0600, signed with
/// `key` and bound to `store_id`. On failure the previous snapshot, if any, is intact.
pub fn write_snapshot(
    path: &Path,
    key: &SnapshotKey,
    store_id: &str,
    snapshot: &ColdSnapshot,
) -> Result<(), ColdSnapshotError> {
    check_store_id(store_id)?;
    // The header gives the payload's length: a first pass measures it without keeping it.
    let mut payload_len = 0u64;
    emit_payload(snapshot, &mut |piece| {
        payload_len += piece.len() as u64;
        Ok(())
    })?;
    let header = header_line(store_id, snapshot, payload_len);
    let (dir, name) = location(path)?;
    remove_stale_temps(dir, &temp_prefix(name));
    let (temp, file) = create_temp(dir, name)?;
    let placed = fill(file, key, &header, snapshot, payload_len)
        .and_then(|()| fs::rename(&temp, path).map_err(ColdSnapshotError::Io));
    if let Err(err) = placed {
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads the snapshot at `path`, refusing it unless: the format and version are this
/// one's, the HMAC-SHA256 over everything signed verifies with `key` (constant-time
/// comparison), the store it was written for is `store_id` (else `Foreign`: another
/// deployment's), and every route, service and key in it parses into domain types.
pub fn read_snapshot(
    path: &Path,
    key: &SnapshotKey,
    store_id: &str,
) -> Result<ColdSnapshot, ColdSnapshotError> {
    check_store_id(store_id)?;
    let bytes = fs::read(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => ColdSnapshotError::Missing,
        _ => ColdSnapshotError::Io(err),
    })?;
    let (written_at, payload) = open(&bytes, key, store_id)?;
    payload.into_snapshot(written_at)
}

/// The authenticated payload of `bytes`, decoded but not yet checked by the domain.
fn open<'b>(
    bytes: &'b [u8],
    key: &SnapshotKey,
    store_id: &str,
) -> Result<(DateTime<Utc>, PayloadIn<'b>), ColdSnapshotError> {
    if bytes.is_empty() {
        return Err(malformed("the file is empty"));
    }
    let not_a_snapshot = || malformed("not a traffic-manager snapshot (no header line)");
    let header_len = bytes
        .iter()
        .take(MAX_HEADER_LEN)
        .position(|&b| b == b'\n')
        .ok_or_else(not_a_snapshot)?
        + 1;
    let header = std::str::from_utf8(&bytes[..header_len - 1]).map_err(|_| not_a_snapshot())?;
    let version = version_of(header)?;
    if version != SNAPSHOT_VERSION {
        return Err(ColdSnapshotError::UnsupportedVersion(version));
    }
    let signed = verify(bytes, header_len, key)?;
    // Authenticated from here on.
    let header = Header::parse(header)?;
    if header.store != store_id {
        return Err(ColdSnapshotError::Foreign {
            written_for: header.store.to_owned(),
        });
    }
    let payload = signed[header_len..]
        .strip_suffix(b"\n")
        .filter(|p| p.len() as u64 == header.payload)
        .ok_or_else(|| malformed("the payload is not of the length the header gives"))?;
    let payload: PayloadIn =
        serde_json::from_slice(payload).map_err(|e| malformed(format!("payload: {e}")))?;
    let counts = (
        payload.routes.len() as u64,
        payload.services.len() as u64,
        payload.keys.len() as u64,
    );
    if counts != (header.routes, header.services, header.keys) {
        return Err(malformed(
            "the payload does not hold the counts the header gives",
        ));
    }
    Ok((header.written_at, payload))
}

/// The version a header names, read before anything is authenticated.
fn version_of(header: &str) -> Result<u32, ColdSnapshotError> {
    let rest = header
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(" version="))
        .ok_or_else(|| malformed("not a traffic-manager snapshot"))?;
    let digits = rest.split(' ').next().unwrap_or_default();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the header's version is not a number"));
    }
    digits
        .parse()
        .map_err(|_| malformed("the header's version is not a number"))
}

/// Checks the signature on the last line of `bytes`; the bytes it signs.
fn verify<'b>(
    bytes: &'b [u8],
    header_len: usize,
    key: &SnapshotKey,
) -> Result<&'b [u8], ColdSnapshotError> {
    if bytes.len() < header_len + TRAILER_LEN {
        return Err(malformed("the file is truncated: it has no signature"));
    }
    let (signed, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let tag = trailer
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(|t| t.strip_suffix(b"\n"))
        .and_then(unhex32)
        .ok_or_else(|| {
            malformed("the file is truncated or damaged: its last line is no signature")
        })?;
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_slice(&tag)
        .map_err(|_| ColdSnapshotError::BadSignature)?;
    Ok(signed)
}

/// The header's fields (its version checked already).
struct Header<'a> {
    store: &'a str,
    written_at: DateTime<Utc>,
    routes: u64,
    services: u64,
    keys: u64,
    payload: u64,
}

impl<'a> Header<'a> {
    fn parse(line: &'a str) -> Result<Self, ColdSnapshotError> {
        let mut fields = line
            .strip_prefix(MAGIC)
            .unwrap_or_default()
            .split(' ')
            .skip(1);
        let mut field = |name: &str| {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|f| f.strip_prefix('='))
                .ok_or_else(|| malformed(format!("the header has no {name}")))
        };
        let number = |raw: &str, name: &str| {
            raw.parse::<u64>()
                .map_err(|_| malformed(format!("the header's {name} is not a number")))
        };
        field("version")?;
        let store = field("store")?;
        let written_at = DateTime::parse_from_rfc3339(field("written_at")?)
            .map_err(|e| malformed(format!("the header's written_at: {e}")))?
            .with_timezone(&Utc);
        let routes = number(field("routes")?, "routes")?;
        let services = number(field("services")?, "services")?;
        let keys = number(field("keys")?, "keys")?;
        let payload = number(field("payload")?, "payload")?;
        if fields.next().is_some() {
            return Err(malformed("the header has fields after payload"));
        }
        Ok(Self {
            store,
            written_at,
            routes,
            services,
            keys,
            payload,
        })
    }
}

fn header_line(store_id: &str, snapshot: &ColdSnapshot, payload_len: u64) -> String {
    format!(
        "{MAGIC} version={SNAPSHOT_VERSION} store={store_id} written_at={} routes={} services={} keys={} payload={payload_len}\n",
        snapshot.written_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        snapshot.routes.len(),
        snapshot.services.len(),
        snapshot.keys.len(),
    )
}

/// The directory `path` is in and its file name.
fn location(path: &Path) -> Result<(&Path, &OsStr), ColdSnapshotError> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a snapshot path must name a file",
        )
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

/// `.<name>.tmp-`: what the temporary files of the snapshot `name` start with.
fn temp_prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    prefix
}

/// A new temporary file in `dir`, created exclusively (never an existing file or a
/// symlink), mode 0600.
fn create_temp(dir: &Path, name: &OsStr) -> Result<(PathBuf, File), ColdSnapshotError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut temp = temp_prefix(name);
        temp.push(format!(
            "{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = dir.join(temp);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not create a temporary snapshot file with a new name",
    )
    .into())
}

/// Removes temporary files of this snapshot left by a crash (old enough that no write
/// can still be under way). Best effort: a failure only leaves them.
fn remove_stale_temps(dir: &Path, prefix: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(prefix.as_encoded_bytes())
        {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if stale && fs::remove_file(entry.path()).is_ok() {
            tracing::warn!(path = %entry.path().display(), "removed a temporary snapshot file left by a crash");
        }
    }
}

/// Writes the whole file into `file`, signing as it goes, and fsyncs it.
fn fill(
    file: File,
    key: &SnapshotKey,
    header: &str,
    snapshot: &ColdSnapshot,
    payload_len: u64,
) -> Result<(), ColdSnapshotError> {
    // Exactly 0600, whatever the umask left.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    let mut out = Signing {
        file,
        mac: key.mac(),
        written: 0,
    };
    out.put(header.as_bytes())?;
    emit_payload(snapshot, &mut |piece| out.put(piece))?;
    out.put(b"\n")?;
    if out.written != header.len() as u64 + payload_len + 1 {
        return Err(io::Error::other("the snapshot changed size between its two passes").into());
    }
    let Signing { mut file, mac, .. } = out;
    let mut trailer = Vec::with_capacity(TRAILER_LEN);
    trailer.extend_from_slice(SIGNATURE_PREFIX);
    trailer.extend_from_slice(hex(&mac.finalize().into_bytes()).as_bytes());
    trailer.push(b'\n');
    file.write_all(&trailer)?;
    file.sync_all()?;
    Ok(())
}

/// Writes to `file`, adding what it writes to `mac`.
struct Signing {
    file: File,
    mac: HmacSha256,
    written: u64,
}

impl Signing {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.mac.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Hands the payload's JSON to `sink` in pieces of about [`CHUNK`] bytes, each entry
/// serialized into one reused buffer (which serde_json writes fastest): the payload is
/// streamed, never held whole.
fn emit_payload(
    snapshot: &ColdSnapshot,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK + CHUNK / 8);
    buf.extend_from_slice(br#"{"routes":"#);
    emit_seq(&mut buf, sink, snapshot.routes.iter().map(RouteOut::from))?;
    buf.extend_from_slice(br#","services":"#);
    emit_seq(
        &mut buf,
        sink,
        snapshot.services.iter().map(ServiceOut::from),
    )?;
    buf.extend_from_slice(br#","keys":"#);
    emit_seq(&mut buf, sink, snapshot.keys.iter().map(KeyOut::from))?;
    buf.push(b'}');
    sink(&buf)
}

/// Appends `items` to `buf` as a JSON array, handing `buf` to `sink` whenever it is full.
fn emit_seq<T: Serialize>(
    buf: &mut Vec<u8>,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    items: impl Iterator<Item = T>,
) -> io::Result<()> {
    buf.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        serde_json::to_writer(&mut *buf, &item)?;
        if buf.len() >= CHUNK {
            sink(buf)?;
            buf.clear();
        }
    }
    buf.push(b']');
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// 64 lowercase hex digits as 32 bytes; nothing else.
fn unhex32(text: &[u8]) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// A route as written.
#[derive(Serialize)]
struct RouteOut<'a> {
    id: RouteId,
    tenant: &'a str,
    service: &'a str,
    env: &'a str,
    version: &'a str,
    url: &'a str,
    weight: u8,
    revision: i64,
    healthy: bool,
    last_healthy: u32,
}

impl<'a> From<&'a ServedRoute> for RouteOut<'a> {
    fn from(route: &'a ServedRoute) -> Self {
        Self {
            id: route.id,
            tenant: route.tenant.as_str(),
            service: route.service.as_str(),
            env: route.env.as_str(),
            version: route.version.as_str(),
            url: route.url.as_str(),
            weight: route.weight.get(),
            revision: route.revision,
            healthy: route.health.healthy,
            last_healthy: route.health.last_healthy,
        }
    }
}

/// A service as written: its policy in its stored form.
#[derive(Serialize)]
struct ServiceOut<'a> {
    tenant: &'a str,
    service: &'a str,
    env: &'a str,
    generation: u64,
    policy: String,
}

impl<'a> From<&'a (GroupKey, ServiceFacts)> for ServiceOut<'a> {
    fn from((key, facts): &'a (GroupKey, ServiceFacts)) -> Self {
        Self {
            tenant: key.tenant.as_str(),
            service: key.service.as_str(),
            env: key.env.as_str(),
            generation: facts.generation,
            policy: serde_json::to_string(&facts.policy).expect("a policy always serializes"),
        }
    }
}

/// A key as written: its secret's hash, never the secret.
#[derive(Serialize)]
struct KeyOut<'a> {
    id: KeyId,
    name: &'a str,
    role: &'static str,
    tenant: Option<&'a str>,
    secret_hash: String,
    created_at: String,
}

impl<'a> From<&'a KeyRecord> for KeyOut<'a> {
    fn from(key: &'a KeyRecord) -> Self {
        Self {
            id: key.id,
            name: &key.name,
            role: key.grant.role().as_str(),
            tenant: key.grant.tenant().map(TenantId::as_str),
            secret_hash: hex(key.secret_hash.as_bytes()),
            created_at: key.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }
}

/// The payload as read: plain values, parsed into domain types afterwards. A route's
/// strings are borrowed from the file where they can be (they need no escapes).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadIn<'a> {
    #[serde(borrow)]
    routes: Vec<RouteIn<'a>>,
    services: Vec<ServiceIn>,
    keys: Vec<KeyIn>,
}

impl PayloadIn<'_> {
    fn into_snapshot(self, written_at: DateTime<Utc>) -> Result<ColdSnapshot, ColdSnapshotError> {
        Ok(ColdSnapshot {
            written_at,
            routes: self
                .routes
                .into_iter()
                .map(RouteIn::parse)
                .collect::<Result<_, _>>()?,
            services: self
                .services
                .into_iter()
                .map(ServiceIn::parse)
                .collect::<Result<_, _>>()?,
            keys: self
                .keys
                .into_iter()
                .map(KeyIn::parse)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteIn<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(borrow)]
    env: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
    weight: i64,
    revision: i64,
    healthy: bool,
    last_healthy: u32,
}

impl RouteIn<'_> {
    fn parse(self) -> Result<ServedRoute, ColdSnapshotError> {
        let bad = |what: &str, e: tm_domain::DomainError| {
            malformed(format!("route {:?}: {what} {e}", self.id))
        };
        Ok(ServedRoute {
            id: self.id.parse::<RouteId>().map_err(|e| bad("id", e))?,
            tenant: TenantId::parse(&self.tenant).map_err(|e| bad("tenant", e))?,
            service: ServiceName::parse(&self.service).map_err(|e| bad("service", e))?,
            env: EnvName::parse(&self.env).map_err(|e| bad("env", e))?,
            version: Version::parse(&self.version).map_err(|e| bad("version", e))?,
            url: UpstreamUrl::parse(&self.url).map_err(|e| bad("url", e))?,
            weight: Weight::parse(self.weight).map_err(|e| bad("weight", e))?,
            revision: self.revision,
            health: Health {
                healthy: self.healthy,
                last_healthy: self.last_healthy,
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceIn {
    tenant: String,
    service: String,
    env: String,
    generation: u64,
    policy: String,
}

impl ServiceIn {
    fn parse(self) -> Result<(GroupKey, ServiceFacts), ColdSnapshotError> {
        let name = format!("{}/{}/{}", self.tenant, self.service, self.env);
        let bad =
            |what: &str, e: &dyn fmt::Display| malformed(format!("service {name:?}: {what} {e}"));
        let key = GroupKey {
            tenant: TenantId::parse(&self.tenant).map_err(|e| bad("tenant", &e))?,
            service: ServiceName::parse(&self.service).map_err(|e| bad("service", &e))?,
            env: EnvName::parse(&self.env).map_err(|e| bad("env", &e))?,
        };
        // Checked as a policy loaded from the database is.
        let policy = crate::row::parse_policy(&self.policy).map_err(|e| bad("policy:", &e))?;
        Ok((
            key,
            ServiceFacts {
                generation: self.generation,
                policy,
            },
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyIn {
    id: String,
    name: String,
    role: String,
    tenant: Option<String>,
    secret_hash: String,
    created_at: String,
}

impl KeyIn {
    fn parse(self) -> Result<KeyRecord, ColdSnapshotError> {
        let bad = |what: &str| malformed(format!("api key {:?}: invalid {what}", self.id));
        let role: Role = self.role.parse().map_err(|_| bad("role"))?;
        let tenant = self
            .tenant
            .as_deref()
            .map(TenantId::parse)
            .transpose()
            .map_err(|_| bad("tenant"))?;
        Ok(KeyRecord {
            id: self.id.parse::<KeyId>().map_err(|_| bad("id"))?,
            grant: Grant::new(role, tenant).map_err(|_| bad("role and tenant"))?,
            secret_hash: unhex32(self.secret_hash.as_bytes())
                .and_then(|h| SecretHash::from_bytes(&h))
                .ok_or_else(|| bad("secret hash"))?,
            created_at: DateTime::parse_from_rfc3339(&self.created_at)
                .map_err(|_| bad("created_at"))?
                .with_timezone(&Utc),
            name: self.name,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tm_domain::{ApiKey, FailoverTier, ResolvePolicy, ServicePolicy};

    use super::*;

    const STORE: &str = "store-a";

    fn key() -> SnapshotKey {
        SnapshotKey::new(vec![7; 32]).expect("32 bytes")
    }

    fn served(tenant: &str, service: &str, version: &str, health: Health) -> ServedRoute {
        ServedRoute {
            id: RouteId::generate(),
            tenant: TenantId::parse(tenant).expect("valid"),
            service: ServiceName::parse(service).expect("valid"),
            env: EnvName::parse("prod").expect("valid"),
            version: Version::parse(version).expect("valid"),
            url: UpstreamUrl::parse(&format!(
                "https://{service}-{version}.{tenant}.internal:8443/api?q=1&r=%20"
            ))
            .expect("valid"),
            weight: Weight::parse(70).expect("valid"),
            revision: 3,
            health,
        }
    }

    /// Routes (one unhealthy), a service with a failover chain and one with the
    /// defaults, an admin key and a tenant reader key.
    fn sample() -> ColdSnapshot {
        let down = Health {
            healthy: false,
            last_healthy: 1_700_000_000,
        };
        let routes = vec![
            served("acme", "billing", "v1", down),
            served("acme", "billing", "v2", Health::default()),
            served("globex", "search", "2024.06.1", Health::default()),
        ];
        let tier = |v: &str| FailoverTier {
            versions: vec![Version::parse(v).expect("valid")],
            min_healthy: 1,
        };
        let policy = ServicePolicy::new(ResolvePolicy::LastKnownGood, vec![tier("v1"), tier("v2")])
            .expect("valid");
        let services = vec![
            (
                routes[0].group(),
                ServiceFacts {
                    generation: 7,
                    policy,
                },
            ),
            (routes[2].group(), ServiceFacts::default()),
        ];
        let acme = TenantId::parse("acme").expect("valid");
        let keys = vec![
            KeyRecord::new(
                &ApiKey::new(KeyId::generate(), [1; 32]),
                "ops".into(),
                Grant::Admin,
            ),
            KeyRecord::new(
                &ApiKey::new(KeyId::generate(), [2; 32]),
                "acme \"reader\" ✓".into(),
                Grant::Reader(acme),
            ),
        ];
        ColdSnapshot {
            written_at: Utc::now(),
            routes,
            services,
            keys,
        }
    }

    /// A snapshot file written by hand: `payload` signed with `key` under a header of
    /// `version` and the given counts.
    fn craft(
        key: &SnapshotKey,
        version: u64,
        counts: (usize, usize, usize),
        payload: &str,
    ) -> Vec<u8> {
        let (routes, services, keys) = counts;
        let mut file = format!(
            "{MAGIC} version={version} store={STORE} written_at=2024-01-01T00:00:00Z \
             routes={routes} services={services} keys={keys} payload={}\n{payload}\n",
            payload.len()
        )
        .into_bytes();
        let mut mac = key.mac();
        mac.update(&file);
        file.extend_from_slice(SIGNATURE_PREFIX);
        file.extend_from_slice(hex(&mac.finalize().into_bytes()).as_bytes());
        file.push(b'\n');
        file
    }

    fn read_bytes(dir: &Path, bytes: &[u8]) -> Result<ColdSnapshot, ColdSnapshotError> {
        let path = dir.join("crafted");
        fs::write(&path, bytes).expect("written");
        read_snapshot(&path, &key(), STORE)
    }

    #[test]
    fn coldstart_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot");
        let api_key = ApiKey::new(KeyId::generate(), [9; 32]);
        let mut snapshot = sample();
        snapshot
            .keys
            .push(KeyRecord::new(&api_key, "k".into(), Grant::Admin));
        write_snapshot(&path, &key(), STORE, &snapshot).expect("written");
        let back = read_snapshot(&path, &key(), STORE).expect("read back");
        assert_eq!(back, snapshot);
        assert_eq!(back.routes[0].health.last_healthy, 1_700_000_000);
        assert!(!back.routes[0].health.healthy);
        assert_eq!(back.services[0].1.policy.failover.len(), 2);
        assert_eq!(
            back.services[0].1.policy.resolve,
            ResolvePolicy::LastKnownGood
        );
        assert_eq!(back.keys[0].grant, Grant::Admin);
        assert!(matches!(back.keys[1].grant, Grant::Reader(ref t) if t.as_str() == "acme"));
        // Hashes, never secrets.
        let text = fs::read_to_string(&path).expect("text");
        let secret = api_key
            .expose()
            .rsplit('_')
            .next()
            .expect("secret")
            .to_owned();
        assert!(!text.contains(&secret));
        assert!(text.contains(&hex(api_key.secret_hash().as_bytes())));
        // An empty snapshot too.
        let empty = ColdSnapshot {
            written_at: Utc::now(),
            routes: vec![],
            services: vec![],
            keys: vec![],
        };
        write_snapshot(&path, &key(), STORE, &empty).expect("written");
        assert_eq!(read_snapshot(&path, &key(), STORE).expect("read"), empty);
    }

    #[test]
    fn coldstart_any_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot");
        write_snapshot(&path, &key(), STORE, &sample()).expect("written");
        let good = fs::read(&path).expect("read");
        let header_len = good.iter().position(|&b| b == b'\n').expect("header") + 1;
        let version_at = MAGIC.len() + " version=".len();
        let store_at = good.windows(6).position(|w| w == b"store=").expect("store") + 6;
        // Every byte, three ways, in memory.
        for at in 0..good.len() {
            for mask in [0x01, 0x20, 0x80] {
                let mut bytes = good.clone();
                bytes[at] ^= mask;
                let result = open(&bytes, &key(), STORE).and_then(|(w, p)| p.into_snapshot(w));
                match result {
                    Err(ColdSnapshotError::BadSignature | ColdSnapshotError::Malformed(_)) => {}
                    Err(ColdSnapshotError::UnsupportedVersion(_)) if at == version_at => {}
                    other => panic!("byte {at} ^ {mask:#x}: {:?}", other.map(|_| "served")),
                }
            }
        }
        // A handful through the file: header, payload start, middle and end, signature.
        let payload_end = good.len() - TRAILER_LEN - 2;
        for at in [
            0,
            store_at,
            header_len - 2,
            header_len,
            (header_len + payload_end) / 2,
            payload_end,
            good.len() - 40,
            good.len() - 1,
        ] {
            let mut bytes = good.clone();
            bytes[at] = bytes[at].wrapping_add(1);
            let err = read_bytes(dir.path(), &bytes).expect_err("refused");
            assert!(
                matches!(
                    err,
                    ColdSnapshotError::BadSignature | ColdSnapshotError::Malformed(_)
                ),
                "byte {at}: {err:?}"
            );
        }
    }

    #[test]
    fn coldstart_another_key_or_store_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot");
        write_snapshot(&path, &key(), STORE, &sample()).expect("written");
        let other = SnapshotKey::new(vec![8; 32]).expect("32 bytes");
        let err = read_snapshot(&path, &other, STORE).expect_err("refused");
        assert!(matches!(err, ColdSnapshotError::BadSignature), "{err:?}");
        // Another deployment's file, even signed with the same key.
        write_snapshot(&path, &key(), "store-b", &sample()).expect("written");
        let err = read_snapshot(&path, &key(), STORE).expect_err("refused");
        eprintln!("{err}");
        assert!(
            matches!(&err, ColdSnapshotError::Foreign { written_for } if written_for == "store-b"),
            "{err:?}"
        );
        // ... and with another key: its signature fails first.
        let err = read_snapshot(&path, &other, STORE).expect_err("refused");
        assert!(matches!(err, ColdSnapshotError::BadSignature), "{err:?}");
    }

    #[test]
    fn coldstart_broken_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot");
        let err = read_snapshot(&path, &key(), STORE).expect_err("missing");
        assert!(matches!(err, ColdSnapshotError::Missing), "{err:?}");
        write_snapshot(&path, &key(), STORE, &sample()).expect("written");
        let good = fs::read(&path).expect("read");
        let header_len = good.iter().position(|&b| b == b'\n').expect("header") + 1;
        let mut noise = vec![0u8; 4096];
        let mut x: u32 = 12345;
        for b in &mut noise {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        let mut broken: Vec<Vec<u8>> = vec![
            vec![],
            b"hello world\n".to_vec(),
            noise,
            b"traffic-manager snapshot version=1\n".to_vec(),
            b"traffic-manager snapshot version=99999999999 store=x\n".to_vec(),
        ];
        for len in [
            10,
            header_len,
            header_len + 5,
            good.len() / 2,
            good.len() - TRAILER_LEN,
            good.len() - 1,
        ] {
            broken.push(good[..len].to_vec());
        }
        for bytes in &broken {
            let err = read_bytes(dir.path(), bytes).expect_err("refused");
            eprintln!("{} bytes: {err}", bytes.len());
            assert!(matches!(err, ColdSnapshotError::Malformed(_)), "{err:?}");
        }
        let future = craft(
            &key(),
            2,
            (0, 0, 0),
            r#"{"routes":[],"services":[],"keys":[]}"#,
        );
        let err = read_bytes(dir.path(), &future).expect_err("refused");
        assert!(
            matches!(err, ColdSnapshotError::UnsupportedVersion(2)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the snapshot is of format version 2; this build reads version 1"
        );
        let err = read_snapshot(&path, &key(), "two words").expect_err("refused");
        assert!(matches!(err, ColdSnapshotError::InvalidStoreId), "{err:?}");
    }

    #[test]
    fn coldstart_writes_are_atomic_and_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot");
        let first = sample();
        write_snapshot(&path, &key(), STORE, &first).expect("written");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A crash mid-write leaves a partial temporary file; an old one is removed later.
        let good = fs::read(&path).expect("read");
        let leftover = dir.path().join(".snapshot.tmp-1-2-3");
        fs::write(&leftover, &good[..good.len() / 2]).expect("written");
        let stale = dir.path().join(".snapshot.tmp-4-5-6");
        File::create(&stale)
            .and_then(|f| f.set_modified(SystemTime::now() - 2 * STALE_TEMP_AGE))
            .expect("stale file");
        assert_eq!(read_snapshot(&path, &key(), STORE).expect("read"), first);
        let second = ColdSnapshot {
            routes: first.routes[1..].to_vec(),
            ..sample()
        };
        write_snapshot(&path, &key(), STORE, &second).expect("written");
        assert_eq!(read_snapshot(&path, &key(), STORE).expect("read"), second);
        let mut temps: Vec<OsString> = fs::read_dir(dir.path())
            .expect("listing")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.as_encoded_bytes().starts_with(b".snapshot.tmp-"))
            .collect();
        temps.sort();
        assert_eq!(temps, [OsString::from(".snapshot.tmp-1-2-3")]);
        // A symlink at the path is replaced, never written through.
        let target = dir.path().join("precious");
        fs::write(&target, "precious").expect("written");
        let link = dir.path().join("linked");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        write_snapshot(&link, &key(), STORE, &second).expect("written");
        assert_eq!(fs::read_to_string(&target).expect("read"), "precious");
        assert!(fs::symlink_metadata(&link).expect("metadata").is_file());
        assert_eq!(read_snapshot(&link, &key(), STORE).expect("read"), second);
    }

    #[test]
    fn coldstart_signed_content_the_domain_refuses_is_malformed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let route = |tenant: &str, weight: i64, url: &str| {
            format!(
                r#"{{"id":"{}","tenant":"{tenant}","service":"billing","env":"prod","version":"v1","url":"{url}","weight":{weight},"revision":1,"healthy":true,"last_healthy":0}}"#,
                RouteId::generate()
            )
        };
        let payload = |r: &str, s: &str, k: &str| {
            format!(r#"{{"routes":[{r}],"services":[{s}],"keys":[{k}]}}"#)
        };
        let service = |policy: &str| {
            format!(
                r#"{{"tenant":"acme","service":"billing","env":"prod","generation":1,"policy":{policy:?}}}"#
            )
        };
        let api_key = |role: &str, tenant: &str, hash: &str| {
            format!(
                r#"{{"id":"{}","name":"k","role":"{role}","tenant":{tenant},"secret_hash":"{hash}","created_at":"2024-01-01T00:00:00Z"}}"#,
                KeyId::generate()
            )
        };
        let ok_url = "https://billing.example:8443/v1";
        let hash = "ab".repeat(32);
        let good = payload(
            &route("acme", 100, ok_url),
            &service(
                r#"{"resolve":"healthy_only","failover":[{"versions":["v1"],"min_healthy":1}]}"#,
            ),
            &api_key("reader", r#""acme""#, &hash),
        );
        let served = read_bytes(dir.path(), &craft(&key(), 1, (1, 1, 1), &good)).expect("valid");
        assert_eq!(served.routes[0].tenant.as_str(), "acme");
        for (counts, bad) in [
            ((1, 0, 0), payload(&route("BAD!", 100, ok_url), "", "")),
            ((1, 0, 0), payload(&route("acme", 101, ok_url), "", "")),
            ((1, 0, 0), payload(&route("acme", 100, "ftp://x"), "", "")),
            (
                (1, 0, 0),
                payload(
                    &route("acme", 100, ok_url).replace('}', r#","extra":1}"#),
                    "",
                    "",
                ),
            ),
            ((2, 0, 0), payload(&route("acme", 100, ok_url), "", "")),
            (
                (0, 1, 0),
                payload(
                    "",
                    &service(
                        r#"{"resolve":"healthy_only","failover":[{"versions":["v1"],"min_healthy":0}]}"#,
                    ),
                    "",
                ),
            ),
            (
                (0, 0, 1),
                payload("", "", &api_key("admin", r#""acme""#, &hash)),
            ),
            (
                (0, 0, 1),
                payload("", "", &api_key("reader", "null", &hash)),
            ),
            (
                (0, 0, 1),
                payload("", "", &api_key("reader", r#""acme""#, "abcd")),
            ),
            ((0, 0, 0), "not json".to_owned()),
        ] {
            let err = read_bytes(dir.path(), &craft(&key(), 1, counts, &bad)).expect_err("refused");
            eprintln!("{err}");
            assert!(
                matches!(err, ColdSnapshotError::Malformed(_)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn coldstart_a_large_snapshot_is_quick() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot");
        let versions = ["v1", "v2", "v3", "v4"];
        let routes: Vec<ServedRoute> = (0..200_000)
            .map(|i| {
                served(
                    &format!("t{}", i / 4000),
                    &format!("svc-{}", i / 4),
                    versions[i % 4],
                    Health::default(),
                )
            })
            .collect();
        let services = routes
            .iter()
            .step_by(4)
            .map(|r| (r.group(), ServiceFacts::default()))
            .collect();
        let snapshot = ColdSnapshot {
            written_at: Utc::now(),
            routes,
            services,
            keys: sample().keys,
        };
        let started = Instant::now();
        write_snapshot(&path, &key(), STORE, &snapshot).expect("written");
        let wrote = started.elapsed();
        let back = read_snapshot(&path, &key(), STORE).expect("read");
        let total = started.elapsed();
        let size = fs::metadata(&path).expect("metadata").len();
        eprintln!(
            "200000 routes: {size} bytes, written in {wrote:?}, read in {:?}",
            total - wrote
        );
        assert_eq!(back, snapshot);
        assert!(total < Duration::from_secs(10), "{total:?}");
    }

    #[test]
    fn coldstart_keys_and_store_ids_are_checked() {
        assert!(matches!(
            SnapshotKey::new(vec![1; 31]),
            Err(ColdSnapshotError::InvalidKey(_))
        ));
        let key = SnapshotKey::from_base64(&KEY_BASE64.encode([0xA5; 32])).expect("valid");
        assert_eq!(format!("{key:?}"), "SnapshotKey(..)");
        let err = SnapshotKey::from_base64("not base64!").expect_err("refused");
        assert!(matches!(err, ColdSnapshotError::InvalidKey(_)), "{err:?}");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot");
        for bad in ["", "a b", "line\nbreak", &"x".repeat(257)] {
            let err = write_snapshot(&path, &key, bad, &sample()).expect_err("refused");
            assert!(matches!(err, ColdSnapshotError::InvalidStoreId), "{err:?}");
        }
        assert!(!path.exists());
    }
}
