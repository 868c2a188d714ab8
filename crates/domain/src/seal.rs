//! Cursor sealing: the text form every cursor (message pages, thread
//! listings, catalog listings) shares. A body of bytes gets a 64-bit
//! FNV-1a checksum and is written as URL-safe base64 without padding, so an
//! edited or truncated cursor is refused. A checksum against accidents, not
//! a signature: cursors are opaque, not secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The text form of a cursor: `body`, then its [`fnv1a`] checksum, in
/// URL-safe base64 without padding.
pub(crate) fn seal(mut body: Vec<u8>) -> String {
    let sum = fnv1a(&body);
    body.extend_from_slice(&sum.to_be_bytes());
    URL_SAFE_NO_PAD.encode(body)
}

/// The body of a text [`seal`] produced, its checksum checked; `None` for
/// anything else (bad base64, too short, any byte changed).
pub(crate) fn unseal(s: &str) -> Option<Vec<u8>> {
    let mut b = URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()?;
    let at = b.len().checked_sub(8)?;
    let sum = u64::from_be_bytes(b[at..].try_into().ok()?);
    b.truncate(at);
    (fnv1a(&b) == sum).then_some(b)
}

/// 64-bit FNV-1a over `bytes`, seeded with a memlayer-specific basis so that
/// cursors from other systems do not validate by accident.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ 0x6d65_6d6c_6179_6572; // "memlayer"
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
