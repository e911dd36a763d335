//! memU's redirects, pointed back at the proxy: an absolute `Location` naming memU's own scheme,
//! authority and base path becomes a path-absolute reference, as nginx's `proxy_redirect
//! default` does. Pure.
//!
//! FastAPI builds its trailing-slash redirect (307) from the `Host` header, which the proxy sets
//! to memU's; a client that follows it (httpx with `follow_redirects=True`, as memu-cli does;
//! requests) would otherwise send the write straight to memU, past the proxy's invalidation. A
//! path-absolute `Location` resolves against the URL the client asked, the proxy's. Any other
//! `Location` (relative already, another host) is left as memU sent it.

use http::header::{HeaderMap, HeaderValue, LOCATION};
use http::uri::{Authority, Scheme};
use http::Uri;

/// memU as its redirects name it.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub scheme: &'a Scheme,
    pub authority: &'a Authority,
    /// The base path requests are forwarded under (`""` or `/base`, no trailing slash).
    pub base_path: &'a str,
}

/// Rewrites `headers`' `Location` when it points at `memu`.
pub fn relocate(headers: &mut HeaderMap, memu: &Origin<'_>) {
    let Some(location) = headers.get(LOCATION) else {
        return;
    };
    let Some(local) = local_target(location.as_bytes(), memu) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&local) {
        headers.insert(LOCATION, value);
    }
}

/// The path and query of `location` under memU's base path, if it is an absolute URL of memU.
fn local_target(location: &[u8], memu: &Origin<'_>) -> Option<String> {
    let uri = Uri::try_from(location).ok()?;
    if uri.scheme()? != memu.scheme || uri.authority()? != memu.authority {
        return None;
    }
    let path = uri.path().strip_prefix(memu.base_path)?;
    if !(path.is_empty() || path.starts_with('/')) {
        return None;
    }
    let path = if path.is_empty() { "/" } else { path };
    Some(match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relocated(location: &str, base_path: &str) -> String {
        let (scheme, authority) = (Scheme::HTTP, Authority::from_static("memu:8000"));
        let memu = Origin {
            scheme: &scheme,
            authority: &authority,
            base_path,
        };
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, HeaderValue::from_str(location).unwrap());
        relocate(&mut headers, &memu);
        headers[LOCATION].to_str().unwrap().to_owned()
    }

    #[test]
    fn redirects_to_memu_come_back_through_the_proxy() {
        let cases = [
            (
                "http://memu:8000/api/v1/memory/memorize",
                "",
                "/api/v1/memory/memorize",
            ),
            ("http://MEMU:8000/clear?x=1", "", "/clear?x=1"),
            ("http://memu:8000", "", "/"),
            ("http://memu:8000/base/memorize", "/base", "/memorize"),
            ("http://memu:8000/base", "/base", "/"),
            // Not memU: another host, port, scheme, or outside the base path.
            (
                "http://other:8000/memorize",
                "",
                "http://other:8000/memorize",
            ),
            ("http://memu:8001/memorize", "", "http://memu:8001/memorize"),
            (
                "https://memu:8000/memorize",
                "",
                "https://memu:8000/memorize",
            ),
            (
                "http://memu:8000/basement",
                "/base",
                "http://memu:8000/basement",
            ),
            // Already relative.
            ("/memorize", "", "/memorize"),
            ("memorize", "", "memorize"),
        ];
        for (location, base, want) in cases {
            assert_eq!(relocated(location, base), want, "{location} under {base:?}");
        }
    }
}
