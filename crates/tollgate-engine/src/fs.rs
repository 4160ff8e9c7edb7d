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

/// Opens `path` for appending, creating it owner-only (a file left readable by an older
/// version is made owner-only too).
pub fn open_private_append(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    private(&mut o);
    let f = o.open(path)?;
    make_private(&f)?;
    Ok(f)
}

/// Writes `bytes` to `path` (replacing it), owner-only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = OpenOptions::new();
    o.create(true).write(true).truncate(true);
    private(&mut o);
    let mut f = o.open(path)?;
    make_private(&f)?;
    f.write_all(bytes)
}

/// Files these options create are 0600 (the mode only applies to a new file).
fn private(o: &mut OpenOptions) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = o;
}

/// Makes an open file 0600 unless it already is.
fn make_private(f: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if f.metadata()?.permissions().mode() & 0o777 != 0o600 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = f;
    Ok(())
}
