//! Files the gateway keeps (journal segments, dead letters) hold usage and account ids: the data
//! directory is owner-only (0700) and every file in it 0600.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Creates `dir` (and parents) and makes it owner-only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it owner-only.
pub fn open_private_append(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}
