//! The dashboard's files, embedded with `include_bytes!` (the binary needs nothing on disk, and
//! nothing is fetched from elsewhere at run time). Each file's URL carries a hash of its content
//! (`?v=`), so a URL with the current hash may be cached for a year; the page itself is
//! `no-cache`. Every response forbids inline script and anything from another origin (CSP).

use std::sync::LazyLock;

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tollgate_core::Code;

use crate::error::ApiError;

/// uPlot, vendored at this version by `scripts/vendor-dashboard-assets` (see `vendor.lock`).
pub const UPLOT_VERSION: &str = "1.6.32";

/// Only what the page needs: its own scripts, styles and fetches; no inline script or style
/// element, no frames, no form posts elsewhere. uPlot sizes its elements through the CSSOM
/// (`element.style`), which `style-src 'self'` allows.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("assets/favicon.svg"),
    },
    Asset {
        name: "uplot-1.6.32.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/uplot-1.6.32.iife.min.js"),
    },
    Asset {
        name: "uplot-1.6.32.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/uplot-1.6.32.min.css"),
    },
];

const INDEX: &str = include_str!("assets/index.html");

/// Each file's content hash (12 hex digits), computed once.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|a| hex::encode(&Sha256::digest(a.bytes)[..6]))
        .collect()
});

/// The page with every `{{file}}` replaced by the file's versioned URL.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    FILES
        .iter()
        .zip(VERSIONS.iter())
        .fold(INDEX.to_string(), |page, (a, v)| {
            page.replace(
                &format!("{{{{{}}}}}", a.name),
                &format!("/dashboard/assets/{}?v={v}", a.name),
            )
        })
});

/// Headers every dashboard response carries.
fn harden(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `GET /dashboard`: the single page (signed in or not; the script asks the session API).
pub async fn page() -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.as_str(),
    )
        .into_response();
    harden(&mut resp);
    resp
}

/// `GET /dashboard/assets/{file}`: long-cached when asked for by its current version.
pub async fn asset(Path(file): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some(i) = FILES.iter().position(|a| a.name == file) else {
        return ApiError::new(Code::NotFound, format!("no dashboard asset {file}")).into_response();
    };
    let (a, version) = (&FILES[i], &VERSIONS[i]);
    let current = query.as_deref() == Some(&format!("v={version}"));
    let cache = if current {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, a.content_type),
            (header::CACHE_CONTROL, cache),
        ],
        a.bytes,
    )
        .into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    harden(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page names every asset by its versioned URL and nothing from elsewhere.
    #[test]
    fn page_links_versioned_local_assets_only() {
        assert!(!PAGE.contains("{{"), "an unreplaced asset placeholder");
        for (a, v) in FILES.iter().zip(VERSIONS.iter()) {
            if a.name.ends_with(".js") || a.name.ends_with(".css") {
                assert!(
                    PAGE.contains(&format!("/dashboard/assets/{}?v={v}", a.name)),
                    "{} is not linked",
                    a.name
                );
            }
        }
        for needle in [
            "http://", "https://", "<script>", " style=", "onclick", "onload",
        ] {
            assert!(!PAGE.contains(needle), "the page has `{needle}`");
        }
    }

    /// The committed uPlot is the pinned version's files: the hashes `vendor.lock` recorded
    /// when `scripts/vendor-dashboard-assets` copied them from the npm tarball (which that
    /// script checks against the registry with `--check`).
    #[test]
    fn vendored_uplot_matches_its_lock() {
        let lock = include_str!("assets/vendor.lock");
        let mut lines = lock.lines();
        let head = lines.next().unwrap_or_default();
        assert!(
            head.starts_with(&format!("uplot {UPLOT_VERSION} sha512-")),
            "vendor.lock pins `{head}`, the code {UPLOT_VERSION}"
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dashboard/assets");
        let mut checked = 0;
        for line in lines {
            let (hash, name) = line.split_once("  ").unwrap();
            assert!(name.contains(UPLOT_VERSION), "{name}");
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&bytes)), hash, "{name} changed");
            if let Some(a) = FILES.iter().find(|a| a.name == name) {
                assert_eq!(a.bytes, bytes.as_slice(), "{name} embedded is not the file");
            }
            checked += 1;
        }
        assert_eq!(
            checked, 3,
            "vendor.lock lists the js, the css and the licence"
        );
    }
}
