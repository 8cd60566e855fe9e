//! Validated Matrix identifiers and SHA-256 digests.
//!
//! Every identifier in this module is checked when it is built, by hand-written validators, and
//! cannot be built any other way. Identifiers that may end up as path components (server names,
//! media IDs, digests) only accept characters that are safe there: none of them can be empty,
//! `.`, `..`, or contain `/`, `\`, `%`, NUL, whitespace, control or non-ASCII characters.
//!
//! | Type          | Grammar                                            |
//! |---------------|----------------------------------------------------|
//! | [`ServerName`]| `host[:port]`, host = DNS name, IPv4 or `[IPv6]`   |
//! | [`MediaId`]   | 1 to 255 of `A-Z a-z 0-9 _ - =`                    |
//! | [`MxcUri`]    | `mxc://<server-name>/<media-id>`                   |
//! | [`UserId`]    | `@localpart:server_name`, at most 255 bytes        |
//! | [`Sha256Hex`] | exactly 64 lowercase hex characters                |
//!
//! Errors are [`IdError`]s; their messages quote the offending input with `{:?}` escaping, so
//! NUL and control characters are visible, and say what would have been accepted.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

const SERVER_NAME: &str = "server name";
const MEDIA_ID: &str = "media ID";
const MXC_URI: &str = "MXC URI";
const USER_ID: &str = "user ID";
const USER_LOCALPART: &str = "user ID localpart";
const SHA256: &str = "SHA-256 digest";

/// The input as shown in error messages: `{:?}`-escaped and cut after 100 characters.
fn quoted(input: &str) -> String {
    const MAX_SHOWN: usize = 100;
    match input.char_indices().nth(MAX_SHOWN) {
        None => format!("{input:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes in all)", &input[..cut], input.len()),
    }
}

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input does not follow the identifier's grammar.
    #[error("invalid {kind} {}: {reason}", quoted(.input))]
    Invalid {
        /// The kind of identifier, e.g. `"media ID"`.
        kind: &'static str,
        /// The rejected input.
        input: String,
        /// What is wrong and what would have been accepted.
        reason: &'static str,
    },
    /// The input is longer than the identifier allows.
    #[error("invalid {kind} {}: {len} bytes long, at most {max} are allowed", quoted(.input))]
    TooLong {
        /// The kind of identifier, e.g. `"server name"`.
        kind: &'static str,
        /// The rejected input.
        input: String,
        /// Its length in bytes.
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// A component of a compound identifier (an [`MxcUri`] or a [`UserId`]) is invalid.
    #[error("invalid {kind} {}: {part}", quoted(.input))]
    InvalidPart {
        /// The kind of the compound identifier, e.g. `"MXC URI"`.
        kind: &'static str,
        /// The whole rejected input.
        input: String,
        /// Why the component is invalid.
        part: Box<IdError>,
    },
}

impl IdError {
    fn invalid(kind: &'static str, input: &str, reason: &'static str) -> Self {
        Self::Invalid {
            kind,
            input: input.to_owned(),
            reason,
        }
    }

    fn part(kind: &'static str, input: &str, part: IdError) -> Self {
        Self::InvalidPart {
            kind,
            input: input.to_owned(),
            part: Box::new(part),
        }
    }

    /// Fails with [`IdError::TooLong`] if `input` is longer than `max` bytes.
    fn check_len(kind: &'static str, input: &str, max: usize) -> Result<(), Self> {
        if input.len() > max {
            return Err(Self::TooLong {
                kind,
                input: input.to_owned(),
                len: input.len(),
                max,
            });
        }
        Ok(())
    }

    /// The kind of identifier that was rejected, e.g. `"media ID"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid { kind, .. }
            | Self::TooLong { kind, .. }
            | Self::InvalidPart { kind, .. } => kind,
        }
    }

    /// The rejected input.
    pub fn input(&self) -> &str {
        match self {
            Self::Invalid { input, .. }
            | Self::TooLong { input, .. }
            | Self::InvalidPart { input, .. } => input,
        }
    }
}

/// Implements the string plumbing shared by the string-backed identifiers. `$ty::from_string`
/// must validate its argument.
macro_rules! string_id {
    ($ty:ident, $field:tt) => {
        impl $ty {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.$field
            }

            /// Consumes the identifier, returning its string.
            pub fn into_string(self) -> String {
                self.$field
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.into_string()
            }
        }

        impl FromStr for $ty {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::from_string(s.to_owned())
            }
        }

        impl TryFrom<String> for $ty {
            type Error = IdError;

            fn try_from(s: String) -> Result<Self, IdError> {
                Self::from_string(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = IdError;

            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::from_string(s.to_owned())
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// ServerName
// ---------------------------------------------------------------------------------------------

/// A Matrix server name: `host[:port]` (Matrix spec appendix "Server Name").
///
/// The host is a DNS name of `A-Z a-z 0-9 - .`, an IPv4 dotted quad, or an IPv6 literal in
/// brackets (`[::1]`, checked with [`Ipv6Addr`]); the port is 1 to 5 digits of value at most
/// 65535. The whole name is at most 255 bytes. Case is kept as given (server names compare as
/// strings).
///
/// Stricter than the spec grammar, because server names become path components: a DNS host
/// must not start with `.` or `-`, end with `.`, or contain `..` (so `.`, `..` and
/// `example.org.` are rejected).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

string_id!(ServerName, 0);

impl ServerName {
    /// The maximum length of a server name, in bytes.
    pub const MAX_LEN: usize = 255;

    fn from_string(s: String) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::invalid(
                SERVER_NAME,
                &s,
                "must not be empty; expected host[:port] with a DNS name, IPv4 or [IPv6] host",
            ));
        }
        IdError::check_len(SERVER_NAME, &s, Self::MAX_LEN)?;
        match check_server_name(&s) {
            Ok(()) => Ok(Self(s)),
            Err(reason) => Err(IdError::invalid(SERVER_NAME, &s, reason)),
        }
    }

    /// Length of the host part, brackets of an IPv6 literal included.
    fn host_len(&self) -> usize {
        let s = &self.0;
        if s.starts_with('[') {
            s.find(']').map_or(s.len(), |i| i + 1)
        } else {
            s.find(':').unwrap_or(s.len())
        }
    }

    /// The host part: a DNS name, an IPv4 address, or an IPv6 literal with its brackets
    /// (`[::1]`).
    pub fn host(&self) -> &str {
        &self.0[..self.host_len()]
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.0[self.host_len()..]
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
    }
}

/// Checks a non-empty server name, returning why it is invalid.
fn check_server_name(s: &str) -> Result<(), &'static str> {
    let port = if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("an IPv6 literal must be closed by ']', as in [::1]:8448");
        };
        if rest[..end].parse::<Ipv6Addr>().is_err() {
            return Err("the text between '[' and ']' must be an IPv6 address, as in [::1]:8448");
        }
        let after = &rest[end + 1..];
        if after.is_empty() {
            None
        } else if let Some(port) = after.strip_prefix(':') {
            Some(port)
        } else {
            return Err("only :port may follow an IPv6 literal, as in [::1]:8448");
        }
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        check_dns_host(host)?;
        port
    };
    match port {
        Some(port) => check_port(port),
        None => Ok(()),
    }
}

fn check_dns_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("the host must not be empty; expected host[:port]");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(
            "a host may only contain A-Z a-z 0-9 - . (IPv6 addresses go in [ ]), \
                    optionally followed by :port",
        );
    }
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err("a host must not start or end with '.' or contain '..'");
    }
    if host.starts_with('-') {
        return Err("a host must not start with '-'");
    }
    Ok(())
}

fn check_port(port: &str) -> Result<(), &'static str> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a port must be 1 to 5 digits 0-9 after ':'");
    }
    match port.parse::<u32>() {
        Ok(value) if value <= u32::from(u16::MAX) => Ok(()),
        _ => Err("a port must be at most 65535"),
    }
}

// ---------------------------------------------------------------------------------------------
// MediaId
// ---------------------------------------------------------------------------------------------

/// A media ID, the last part of an MXC URI: 1 to 255 characters of `A-Z a-z 0-9 _ - =`.
///
/// This is a safe path-component alphabet: a media ID can never be `.`, `..` or contain a
/// separator, an escape or a control character. Every ID generated by Synapse, Dendrite and
/// matrix-media-repo fits, URL-preview IDs like `2024-01-01_abcDEF` included. `=` is
/// outside the spec's `[A-Za-z0-9_-]` but servers in the wild use it (padded base64 IDs)
/// and Dendrite serves and stores such remote media, so a store holding them is read, and
/// purged, like any other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId(String);

string_id!(MediaId, 0);

impl MediaId {
    /// The maximum length of a media ID, in bytes.
    pub const MAX_LEN: usize = 255;

    fn from_string(s: String) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::invalid(
                MEDIA_ID,
                &s,
                "must not be empty; 1 to 255 of A-Z a-z 0-9 _ - = are allowed",
            ));
        }
        IdError::check_len(MEDIA_ID, &s, Self::MAX_LEN)?;
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'='))
        {
            return Err(IdError::invalid(
                MEDIA_ID,
                &s,
                "only A-Z a-z 0-9 _ - = are allowed",
            ));
        }
        Ok(Self(s))
    }
}

// ---------------------------------------------------------------------------------------------
// MxcUri
// ---------------------------------------------------------------------------------------------

/// An MXC URI, `mxc://<server-name>/<media-id>`, naming one piece of Matrix media.
///
/// Parsing is strict: the scheme must be lowercase `mxc://`, and there must be exactly one
/// [`ServerName`] and one [`MediaId`], with no further path segments, query or fragment.
/// [`Display`](fmt::Display) writes exactly `mxc://server/media_id` back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MxcUri {
    server: ServerName,
    media_id: MediaId,
}

impl MxcUri {
    /// The URI of `media_id` on `server`.
    pub fn new(server: ServerName, media_id: MediaId) -> Self {
        Self { server, media_id }
    }

    /// The server the media originates from.
    pub fn server(&self) -> &ServerName {
        &self.server
    }

    /// The media ID.
    pub fn media_id(&self) -> &MediaId {
        &self.media_id
    }

    /// Splits the URI into its server name and media ID.
    pub fn into_parts(self) -> (ServerName, MediaId) {
        (self.server, self.media_id)
    }

    fn parse_str(s: &str) -> Result<Self, IdError> {
        let err = |reason| IdError::invalid(MXC_URI, s, reason);
        let Some(rest) = s.strip_prefix("mxc://") else {
            return Err(err(
                "must start with lowercase \"mxc://\"; expected mxc://<server-name>/<media-id>",
            ));
        };
        if rest.contains(['?', '#']) {
            return Err(err(
                "must not have a query or fragment; expected mxc://<server-name>/<media-id>",
            ));
        }
        let Some((server, media_id)) = rest.split_once('/') else {
            return Err(err(
                "the '/' and media ID are missing; expected mxc://<server-name>/<media-id>",
            ));
        };
        if server.is_empty() {
            return Err(err(
                "the server name is missing; expected mxc://<server-name>/<media-id>",
            ));
        }
        if media_id.is_empty() {
            return Err(err(
                "the media ID is missing; expected mxc://<server-name>/<media-id>",
            ));
        }
        if media_id.contains('/') {
            return Err(err(
                "must have exactly one path segment after the server name; \
                 expected mxc://<server-name>/<media-id>",
            ));
        }
        let server = ServerName::from_str(server).map_err(|e| IdError::part(MXC_URI, s, e))?;
        let media_id = MediaId::from_str(media_id).map_err(|e| IdError::part(MXC_URI, s, e))?;
        Ok(Self { server, media_id })
    }
}

impl fmt::Display for MxcUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxc://{}/{}", self.server, self.media_id)
    }
}

impl FromStr for MxcUri {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse_str(s)
    }
}

impl TryFrom<String> for MxcUri {
    type Error = IdError;

    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse_str(&s)
    }
}

impl TryFrom<&str> for MxcUri {
    type Error = IdError;

    fn try_from(s: &str) -> Result<Self, IdError> {
        Self::parse_str(s)
    }
}

impl From<MxcUri> for String {
    fn from(mxc: MxcUri) -> String {
        mxc.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// UserId
// ---------------------------------------------------------------------------------------------

/// A Matrix user ID, `@localpart:server_name`, at most 255 bytes in all.
///
/// The localpart may be a historical one: any printable ASCII character (0x21 to 0x7E) except
/// `:` is accepted, as the spec requires; modern localparts use `a-z 0-9 . _ = - / +` (see
/// [`UserId::is_historical`]). The localpart therefore is **not** path-safe (`@../x:example.org`
/// is a valid user ID); never use it as a path component. The server name is a validated
/// [`ServerName`]. The ID is split at its first `:`, since a localpart cannot contain one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    full: String,
    server_name: ServerName,
}

string_id!(UserId, full);

/// Whether `localpart` only has characters allowed in historical localparts.
fn is_valid_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart
            .bytes()
            .all(|b| (0x21..=0x7E).contains(&b) && b != b':')
}

const LOCALPART_CHARS: &str = "the localpart may only contain printable ASCII except ':' \
     (modern user IDs use a-z 0-9 . _ = - / +); expected @localpart:server_name";

impl UserId {
    /// The maximum length of a user ID, sigil and server name included, in bytes.
    pub const MAX_LEN: usize = 255;

    /// The user ID `@localpart:server_name`.
    pub fn new(localpart: &str, server_name: &ServerName) -> Result<Self, IdError> {
        if localpart.is_empty() {
            return Err(IdError::invalid(
                USER_LOCALPART,
                localpart,
                "must not be empty; printable ASCII except ':' is allowed",
            ));
        }
        if !is_valid_localpart(localpart) {
            return Err(IdError::invalid(
                USER_LOCALPART,
                localpart,
                "only printable ASCII except ':' is allowed (modern user IDs use a-z 0-9 . _ = - / +)",
            ));
        }
        let full = format!("@{localpart}:{server_name}");
        IdError::check_len(USER_ID, &full, Self::MAX_LEN)?;
        Ok(Self {
            full,
            server_name: server_name.clone(),
        })
    }

    fn from_string(s: String) -> Result<Self, IdError> {
        let err = |reason| IdError::invalid(USER_ID, &s, reason);
        if s.is_empty() {
            return Err(err("must not be empty; expected @localpart:server_name"));
        }
        IdError::check_len(USER_ID, &s, Self::MAX_LEN)?;
        let Some(rest) = s.strip_prefix('@') else {
            return Err(err("must start with '@'; expected @localpart:server_name"));
        };
        let Some((localpart, server)) = rest.split_once(':') else {
            return Err(err(
                "the ':' between localpart and server name is missing; \
                 expected @localpart:server_name",
            ));
        };
        if localpart.is_empty() {
            return Err(err(
                "the localpart must not be empty; expected @localpart:server_name",
            ));
        }
        if !is_valid_localpart(localpart) {
            return Err(err(LOCALPART_CHARS));
        }
        let server_name =
            ServerName::from_str(server).map_err(|e| IdError::part(USER_ID, &s, e))?;
        Ok(Self {
            full: s,
            server_name,
        })
    }

    /// The localpart, between `@` and the first `:`. Not path-safe.
    pub fn localpart(&self) -> &str {
        let colon = self.full.find(':').unwrap_or(self.full.len());
        &self.full[1..colon]
    }

    /// The user's home server.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Whether the localpart uses characters outside the modern set `a-z 0-9 . _ = - / +`.
    pub fn is_historical(&self) -> bool {
        !self
            .localpart()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
    }
}

// ---------------------------------------------------------------------------------------------
// RoomId
// ---------------------------------------------------------------------------------------------

/// A Matrix room ID: `!opaque:server.name`, or the bare `!opaque` of room version 12.
///
/// Room IDs never become paths, so the check is the spec's outer shape only: a leading
/// `!`, at most 255 bytes, printable ASCII without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

string_id!(RoomId, 0);

impl RoomId {
    /// The longest room ID the spec allows, in bytes.
    pub const MAX_LEN: usize = 255;

    fn from_string(s: String) -> Result<Self, IdError> {
        if s.len() > Self::MAX_LEN {
            return Err(IdError::TooLong {
                kind: "room ID",
                len: s.len(),
                input: s,
                max: Self::MAX_LEN,
            });
        }
        if s.len() < 2 || !s.starts_with('!') || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdError::Invalid {
                kind: "room ID",
                input: s,
                reason: "expected !opaque:server.name (printable ASCII, no spaces)",
            });
        }
        Ok(Self(s))
    }
}

// ---------------------------------------------------------------------------------------------
// Sha256Hex
// ---------------------------------------------------------------------------------------------

/// A SHA-256 digest as exactly 64 **lowercase** hex characters (`0-9 a-f`).
///
/// Uppercase hex is rejected so that one digest has one spelling (it names files and database
/// rows); use [`Sha256Hex::parse_any_case`] for input that may be uppercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hex(String);

string_id!(Sha256Hex, 0);

/// The value of a lowercase hex digit.
fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => 0,
    }
}

impl Sha256Hex {
    /// The length of the hex string.
    pub const LEN: usize = 64;

    fn from_string(s: String) -> Result<Self, IdError> {
        if s.len() == Self::LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Ok(Self(s));
        }
        let reason = if s.len() == Self::LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            "uppercase hex is not accepted; expected exactly 64 lowercase hex characters 0-9 a-f \
             (Sha256Hex::parse_any_case accepts uppercase)"
        } else {
            "expected exactly 64 lowercase hex characters 0-9 a-f"
        };
        Err(IdError::invalid(SHA256, &s, reason))
    }

    /// The hex form of a raw 32-byte digest.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        Self(hex::encode(digest))
    }

    /// The hex form of a raw digest, which must be exactly 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        match <&[u8; 32]>::try_from(bytes) {
            Ok(digest) => Ok(Self::from_digest(digest)),
            Err(_) => Err(IdError::invalid(
                SHA256,
                &hex::encode(bytes),
                "a raw SHA-256 digest must be exactly 32 bytes",
            )),
        }
    }

    /// Parses hex of either case (as some databases store it), lowercasing it.
    pub fn parse_any_case(s: &str) -> Result<Self, IdError> {
        Self::from_string(s.to_ascii_lowercase()).map_err(|_| {
            IdError::invalid(SHA256, s, "expected exactly 64 hex characters 0-9 a-f A-F")
        })
    }

    /// The raw 32-byte digest.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(self.0.as_bytes().chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_keep_the_spec_shape() {
        for ok in [
            "!abc:example.org",
            "!CHtsZYNEgkCZgyHTVo_Ck5w",
            "!a:[::1]:8448",
        ] {
            assert_eq!(ok.parse::<RoomId>().unwrap().as_str(), ok);
        }
        for bad in ["", "!", "#alias:example.org", "!a b:example.org", "!é:x"] {
            assert!(bad.parse::<RoomId>().is_err(), "{bad:?}");
        }
        let long = format!("!{}", "a".repeat(RoomId::MAX_LEN));
        assert!(matches!(
            long.parse::<RoomId>(),
            Err(IdError::TooLong { .. })
        ));
    }
    use sha2::Digest;

    /// Shapes that must never be accepted by any path-safe identifier.
    fn malicious() -> Vec<String> {
        let mut v: Vec<String> = [
            "..",
            ".",
            "../x",
            "a/../b",
            "/abs",
            "a/b",
            "a\\b",
            "..\\x",
            "%2e%2e",
            "%2F",
            "a%2Fb",
            "a\0b",
            "\0",
            "a\nb",
            "\n",
            "a\rb",
            "a\tb",
            "a b",
            " a",
            "a ",
            " ",
            "",
            "ＡＢＣ",
            "é",
            "caf\u{e9}",
            "a\u{200b}b",
            "a\u{7f}b",
            "~",
            "a?b",
            "a#b",
            "a*b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push("a".repeat(256));
        v.push("a".repeat(1000));
        v
    }

    #[test]
    fn server_names_valid() {
        for (s, host, port) in [
            ("example.org", "example.org", None),
            ("example.org:8448", "example.org", Some(8448)),
            ("1.2.3.4", "1.2.3.4", None),
            ("1.2.3.4:5", "1.2.3.4", Some(5)),
            ("[::1]", "[::1]", None),
            ("[1234:5678::abcd]:8448", "[1234:5678::abcd]", Some(8448)),
            ("[::ffff:1.2.3.4]:1", "[::ffff:1.2.3.4]", Some(1)),
            ("localhost", "localhost", None),
            ("127.0.0.1:50779", "127.0.0.1", Some(50779)),
            ("Example.ORG", "Example.ORG", None),
            ("a-b.c-d", "a-b.c-d", None),
            ("x:65535", "x", Some(65535)),
            ("x:0", "x", Some(0)),
            ("matrix.org:443", "matrix.org", Some(443)),
        ] {
            let name: ServerName = s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(name.host(), host, "{s}");
            assert_eq!(name.port(), port, "{s}");
            assert_eq!(name.to_string(), s);
            assert_eq!(name.as_str(), s);
            assert_eq!(name.as_ref(), s);
            assert_eq!(ServerName::try_from(s.to_owned()).unwrap(), name);
            assert_eq!(ServerName::try_from(s).unwrap(), name);
            assert_eq!(name.clone().into_string(), s);
        }
        let longest = format!("{}.org", "a".repeat(251));
        assert_eq!(longest.len(), 255);
        assert!(longest.parse::<ServerName>().is_ok());
    }

    #[test]
    fn server_names_invalid() {
        let mut bad = malicious();
        bad.extend(
            [
                ".a",
                "a.",
                "a..b",
                "..a",
                "-a",
                "-",
                ":8448",
                "a:",
                "a:65536",
                "a:99999",
                "a:123456",
                "a:8a",
                "a:-1",
                "a:+1",
                "a: 1",
                "a:1:2",
                "[::1",
                "[not-ip]",
                "[]",
                "[::1]x",
                "[::1]:",
                "[::1]:65536",
                "::1",
                "[::1%eth0]",
                "[[::1]]",
                "a@b",
                "a_b",
                "a,b",
                "a]",
                "[1.2.3.4]",
                "http://a",
                "a/",
                "/",
                "\\",
            ]
            .map(String::from),
        );
        bad.push(format!("{}.org", "a".repeat(252)));
        for s in bad {
            let err = s.parse::<ServerName>().expect_err(&s);
            assert_eq!(err.kind(), SERVER_NAME);
            assert_eq!(err.input(), s);
            assert!(ServerName::try_from(s.as_str()).is_err());
        }
    }

    #[test]
    fn media_ids() {
        // `=`: padded base64 IDs from servers in the wild, which Dendrite stores.
        for s in [
            "abcDEF123_-",
            "2024-01-01_abcDEF",
            "a",
            "-",
            "_",
            "0",
            "abc=",
            "a=b",
        ] {
            let id: MediaId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(MediaId::try_from(s.to_owned()).unwrap().into_string(), s);
        }
        assert!(MediaId::try_from("a".repeat(255)).is_ok());
        let mut bad = malicious();
        bad.extend(["a.b", "a:b", ":", "a@b", "a+b", "a/b=", "mxc://a/b"].map(String::from));
        for s in bad {
            let err = MediaId::try_from(s.as_str()).expect_err(&s);
            assert_eq!(err.kind(), MEDIA_ID);
            assert_eq!(err.input(), s);
        }
    }

    #[test]
    fn mxc_uris_valid() {
        for (s, server, id) in [
            (
                "mxc://example.org/abcDEF123_-",
                "example.org",
                "abcDEF123_-",
            ),
            (
                "mxc://example.org:8448/2024-01-01_abcDEF",
                "example.org:8448",
                "2024-01-01_abcDEF",
            ),
            ("mxc://[::1]:8448/x", "[::1]:8448", "x"),
            ("mxc://1.2.3.4/y", "1.2.3.4", "y"),
        ] {
            let mxc: MxcUri = s.parse().unwrap();
            assert_eq!(mxc.server().as_str(), server);
            assert_eq!(mxc.media_id().as_str(), id);
            assert_eq!(mxc.to_string(), s);
            assert_eq!(String::from(mxc.clone()), s);
            assert_eq!(MxcUri::try_from(s.to_owned()).unwrap(), mxc);
            assert_eq!(MxcUri::try_from(s).unwrap(), mxc);
            let rebuilt = MxcUri::new(server.parse().unwrap(), id.parse().unwrap());
            assert_eq!(rebuilt, mxc);
            let (srv, media) = rebuilt.into_parts();
            assert_eq!((srv.as_str(), media.as_str()), (server, id));
        }
    }

    #[test]
    fn mxc_uris_invalid() {
        let mut bad: Vec<String> = [
            "mxc://a/b/c",
            "mxc://a/",
            "mxc:///b",
            "mxc://a/b?x",
            "mxc://a/b#x",
            "mxc://a/b?",
            "http://a/b",
            "https://a/b",
            "MXC://a/b",
            "Mxc://a/b",
            "mxc:/a/b",
            "mxc:a/b",
            "mxc://",
            "mxc://a",
            "mxc:///",
            "mxc://a//b",
            " mxc://a/b",
            "mxc://a/b ",
            "mxc://a/b\n",
            "mxc://a/..",
            "mxc://a/.",
            "mxc://../b",
            "mxc://./b",
            "mxc://a/b\0",
            "mxc://a\\b/c",
            "mxc://a/b\\c",
            "mxc://a/%2e%2e",
            "mxc://%2e%2e/b",
            "mxc://a/../b",
            "mxc://user@a/b",
            "mxc://a:/b",
            "mxc://a:99999/b",
            "mxc://[::1/b",
            "mxc://[x]/b",
            "mxc://a/é",
            "mxc://é/a",
            "mxc://a/ＡＢＣ",
            "",
            "a/b",
        ]
        .map(String::from)
        .to_vec();
        bad.push(format!("mxc://a/{}", "b".repeat(256)));
        bad.push(format!("mxc://{}/b", "a".repeat(256)));
        for m in malicious() {
            bad.push(format!("mxc://{m}/b"));
            bad.push(format!("mxc://a/{m}"));
        }
        for s in bad {
            let err = s.parse::<MxcUri>().expect_err(&s);
            assert_eq!(err.kind(), MXC_URI);
            assert_eq!(err.input(), s);
        }
    }

    #[test]
    fn user_ids_valid() {
        for (s, local, server, historical) in [
            ("@alice:example.org", "alice", "example.org", false),
            ("@Alice!#$:example.org", "Alice!#$", "example.org", true),
            ("@a:[::1]:8448", "a", "[::1]:8448", false),
            (
                "@a.b_c=d-e/f+g:example.org:8448",
                "a.b_c=d-e/f+g",
                "example.org:8448",
                false,
            ),
            ("@a\\b~:1.2.3.4", "a\\b~", "1.2.3.4", true),
            // Historical localparts are valid but not path-safe; never use one as a path.
            ("@../x:example.org", "../x", "example.org", false),
        ] {
            let user: UserId = s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(user.localpart(), local);
            assert_eq!(user.server_name().as_str(), server);
            assert_eq!(user.is_historical(), historical, "{s}");
            assert_eq!(user.to_string(), s);
            assert_eq!(UserId::try_from(s.to_owned()).unwrap(), user);
            assert_eq!(UserId::try_from(s).unwrap(), user);
            let built = UserId::new(local, &server.parse().unwrap()).unwrap();
            assert_eq!(built, user);
            assert_eq!(built.into_string(), s);
        }
        let longest = format!("@{}:example.org", "a".repeat(255 - 13));
        assert_eq!(longest.len(), 255);
        assert!(longest.parse::<UserId>().is_ok());
    }

    #[test]
    fn user_ids_invalid() {
        let mut bad: Vec<String> = [
            "alice:example.org",
            "@alice",
            "@:example.org",
            "@alice:",
            "@",
            "",
            ":",
            "@:",
            "alice",
            "@a b:example.org",
            "@a\0:example.org",
            "@a\n:example.org",
            "@é:example.org",
            "@ＡＢＣ:example.org",
            "@a\u{7f}:example.org",
            "@alice:../x",
            "@alice:a/b",
            "@alice:..",
            "@alice:.",
            "@alice:example.org/x",
            "@alice:[::1",
            "@alice:ex ample.org",
            "@alice:example.org:",
            "@alice:example.org:65536",
            " @alice:example.org",
            "@alice:example.org ",
            "@alice:example.org\n",
            "#room:example.org",
        ]
        .map(String::from)
        .to_vec();
        bad.push(format!("@{}:example.org", "a".repeat(255 - 12)));
        for m in malicious() {
            bad.push(format!("@alice:{m}"));
        }
        for s in bad {
            let err = s.parse::<UserId>().expect_err(&s);
            assert_eq!(err.kind(), USER_ID);
            assert_eq!(err.input(), s);
        }
        let server: ServerName = "example.org".parse().unwrap();
        for local in ["", "a:b", "a b", "é", "a\0", "\n"] {
            let err = UserId::new(local, &server).expect_err(local);
            assert_eq!(err.kind(), USER_LOCALPART);
        }
        assert!(UserId::new(&"a".repeat(243), &server).is_err());
        assert!(UserId::new(&"a".repeat(242), &server).is_ok());
    }

    #[test]
    fn sha256_hex() {
        let digest: [u8; 32] = std::array::from_fn(|i| (i * 8 + 1) as u8);
        let sha = Sha256Hex::from_digest(&digest);
        assert_eq!(sha.as_str(), hex::encode(digest));
        assert_eq!(sha.to_bytes(), digest);
        assert_eq!(Sha256Hex::from_bytes(&digest).unwrap(), sha);
        assert!(Sha256Hex::from_bytes(&digest[..31]).is_err());
        assert!(Sha256Hex::from_bytes(&[0; 33]).is_err());
        assert!(Sha256Hex::from_bytes(&[]).is_err());

        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            Sha256Hex::from_digest(&sha2::Sha256::digest(b"").into()).as_str(),
            empty
        );
        let parsed: Sha256Hex = empty.parse().unwrap();
        assert_eq!(parsed.to_string(), empty);
        assert_eq!(Sha256Hex::try_from(empty.to_owned()).unwrap(), parsed);
        assert_eq!(Sha256Hex::from_bytes(&parsed.to_bytes()).unwrap(), parsed);

        let upper = empty.to_ascii_uppercase();
        let err = upper.parse::<Sha256Hex>().unwrap_err();
        assert!(err.to_string().contains("uppercase"), "{err}");
        assert_eq!(Sha256Hex::parse_any_case(&upper).unwrap(), parsed);
        assert_eq!(Sha256Hex::parse_any_case(empty).unwrap(), parsed);
        let mixed = format!("E3B0{}", &empty[4..]);
        assert!(Sha256Hex::try_from(mixed.as_str()).is_err());
        assert_eq!(Sha256Hex::parse_any_case(&mixed).unwrap(), parsed);

        let mut bad = malicious();
        bad.extend([
            empty[..63].to_owned(),
            format!("{empty}0"),
            "g".repeat(64),
            format!("{}z", &empty[..63]),
            format!("{}\0", &empty[..63]),
            format!("{} ", &empty[..63]),
            format!("0x{}", &empty[..62]),
            format!("{}é", &empty[..62]),
            format!("../{}", &empty[..61]),
        ]);
        for s in bad {
            let err = Sha256Hex::try_from(s.as_str()).expect_err(&s);
            assert_eq!(err.kind(), SHA256);
            assert!(Sha256Hex::parse_any_case(&s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn error_messages() {
        let err = "../x".parse::<MediaId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid media ID "../x": only A-Z a-z 0-9 _ - = are allowed"#
        );

        let err = "a\0b".parse::<ServerName>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(r#"invalid server name "a\0b": "#), "{msg}");
        assert!(msg.contains("A-Z a-z 0-9"), "{msg}");

        let msg = "a\nb".parse::<MediaId>().unwrap_err().to_string();
        assert!(msg.contains(r#""a\nb""#) && !msg.contains('\n'), "{msg}");

        let msg = "mxc://../b".parse::<MxcUri>().unwrap_err().to_string();
        assert!(
            msg.starts_with(r#"invalid MXC URI "mxc://../b": invalid server name "..""#),
            "{msg}"
        );

        let msg = "alice:example.org"
            .parse::<UserId>()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(r#""alice:example.org""#) && msg.contains("'@'"),
            "{msg}"
        );

        let msg = "x:70000".parse::<ServerName>().unwrap_err().to_string();
        assert!(
            msg.contains("\"x:70000\"") && msg.contains("65535"),
            "{msg}"
        );

        let long = "a".repeat(300);
        let err = long.parse::<MediaId>().unwrap_err();
        assert_eq!(
            err,
            IdError::TooLong {
                kind: MEDIA_ID,
                input: long.clone(),
                len: 300,
                max: 255
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("300 bytes") && msg.contains("at most 255"),
            "{msg}"
        );
        assert!(msg.len() < 200, "long inputs are cut in messages: {msg}");

        for (s, msg) in [
            ("", "".parse::<ServerName>().unwrap_err().to_string()),
            ("", "".parse::<MediaId>().unwrap_err().to_string()),
            ("", "".parse::<UserId>().unwrap_err().to_string()),
            ("", "".parse::<MxcUri>().unwrap_err().to_string()),
            ("xyz", "xyz".parse::<Sha256Hex>().unwrap_err().to_string()),
        ] {
            assert!(msg.contains(&format!("{s:?}")), "{msg}");
        }
    }

    #[test]
    fn ordering_and_hashing_follow_the_string() {
        use std::collections::HashSet;
        let a: ServerName = "a.org".parse().unwrap();
        let b: ServerName = "b.org".parse().unwrap();
        assert!(a < b);
        let set: HashSet<UserId> = ["@x:a.org", "@x:a.org", "@y:a.org"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(set.len(), 2);
    }
}
