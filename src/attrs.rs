//! The stored attributes file (`attributes.lla`, layout in
//! `codec::attributes`): read at open, rewritten when an opener's options
//! differ from what is stored.
//!
//! Invariant: the file is replaced whole: the new revision is written to
//! `attributes.lla.tmp`, synced, renamed over the old one and the
//! directory synced, so a crash leaves either revision, never a mix (open
//! removes a leftover `.tmp` unread).

use crate::codec::attributes::{self, Attributes, AttributesError};
use crate::error::{Error, Result};
use crate::layout::{ATTRIBUTES_NAME, ATTRIBUTES_TMP};
use crate::storage::{read_all, Storage};

/// The stored attributes and their revision, if the directory has them (a
/// new directory, or one written by format version 1, has none).
pub(crate) fn read(storage: &dyn Storage, exists: bool) -> Result<Option<(Attributes, u64)>> {
    if !exists {
        return Ok(None);
    }
    let bytes = read_all(&*storage.open(ATTRIBUTES_NAME)?)?;
    attributes::decode(&bytes).map(Some).map_err(|e| match e {
        AttributesError::Header(crate::codec::header::HeaderError::Version(found)) => {
            Error::UnsupportedVersion {
                file: ATTRIBUTES_NAME.to_string(),
                found,
                supported: crate::codec::FORMAT_VERSION,
            }
        }
        other => Error::Corrupt {
            file: ATTRIBUTES_NAME.to_string(),
            offset: 0,
            detail: format!("bad attributes file: {other:?}"),
        },
    })
}

/// Replace the stored attributes with `a` as revision `revision`.
pub(crate) fn write(
    storage: &dyn Storage,
    a: &Attributes,
    revision: u64,
    now_ms: u64,
) -> Result<()> {
    let bytes = attributes::encode(a, revision, now_ms);
    let _ = storage.remove(ATTRIBUTES_TMP);
    // Written whole and synced before the rename relies on it.
    let file = storage.create_to_overwrite(ATTRIBUTES_TMP, bytes.len() as u64)?;
    file.write_at(0, &bytes)?;
    file.sync_data()?;
    storage.rename(ATTRIBUTES_TMP, ATTRIBUTES_NAME)?;
    storage.sync_dir()?;
    Ok(())
}
