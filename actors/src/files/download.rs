//! A message's attachments, fetched when it runs: only from Discord's attachment hosts (or, in
//! proxy mode, the configured server), no redirects, with a timeout, at most `files.max_bytes`
//! each, the length checked. An attachment whose *bytes* are a PNG, JPEG, GIF or WebP within
//! the API's limits (at most `files.max_image_bytes`, 8000 pixels a side, `files.max_images` a
//! message) goes to Claude as an image block of the turn; anything else — whatever its name or
//! content type says — is saved to the inbox like any other file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{sanitize_name, AttachmentMeta, FilesConfig, FilesRoot};

/// The longest side of an image the Messages API takes, in pixels.
const MAX_IMAGE_SIDE: usize = 8000;

/// An image for the turn, as its API block needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub media_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What a message's attachments became.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Images for the turn's content blocks.
    pub images: Vec<Image>,
    /// Files saved in the inbox, as paths relative to the project directory.
    pub saved: Vec<(PathBuf, u64)>,
    /// What the user is told: refused or failed attachments.
    pub notes: Vec<String>,
}

impl Fetched {
    /// The lines added to the prompt, naming the saved files.
    pub fn prompt_note(&self) -> Option<String> {
        if self.saved.is_empty() {
            return None;
        }
        let mut text = String::from("[Files attached to this message, saved in the project:");
        for (path, size) in &self.saved {
            let _ = write!(text, "\n- {} ({size} bytes)", path.display());
        }
        text.push(']');
        Some(text)
    }
}

/// `bytes` as an image block, if they are a PNG, JPEG, GIF or WebP whose header gives its size
/// within the API's limits; else why not.
pub fn image_of(bytes: &[u8], max_bytes: u64) -> Result<Image, String> {
    let media_type = match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => "image/png",
        Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
        Ok(imagesize::ImageType::Gif) => "image/gif",
        Ok(imagesize::ImageType::Webp) => "image/webp",
        _ => return Err("it is not a PNG, JPEG, GIF or WebP image".into()),
    };
    let size =
        imagesize::blob_size(bytes).map_err(|_| "its image header cannot be read".to_string())?;
    if size.width == 0 || size.height == 0 {
        return Err("its image header gives no size".into());
    }
    if size.width > MAX_IMAGE_SIDE || size.height > MAX_IMAGE_SIDE {
        return Err(format!(
            "it is {}×{} pixels, more than Claude takes ({MAX_IMAGE_SIDE} a side)",
            size.width, size.height
        ));
    }
    if bytes.len() as u64 > max_bytes {
        return Err(format!("it is larger than {max_bytes} bytes"));
    }
    Ok(Image {
        media_type: media_type.to_string(),
        bytes: bytes.to_vec(),
    })
}

/// Whether `url` may be downloaded: http(s) on one of `hosts` (any port for a host given
/// with one, e.g. `127.0.0.1:4242` in proxy mode).
pub fn allowed_url(url: &str, hosts: &[String]) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if !matches!(u.scheme(), "https" | "http") || !u.username().is_empty() {
        return false;
    }
    let Some(host) = u.host_str() else {
        return false;
    };
    let with_port = u.port().map(|p| format!("{host}:{p}"));
    hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host) || with_port.as_deref().is_some_and(|w| h == w))
}

/// The client for attachment downloads: one for the service, built once, its connections
/// reused; it follows no redirect (one could lead off Discord's hosts).
fn downloads() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// Downloads `url` (at most `limit` bytes, within `timeout`), checking the status and that the
/// length is the `expected` one.
async fn download(
    client: &reqwest::Client,
    url: &str,
    limit: u64,
    expected: u64,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let mut response = client.get(url).timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            "the download timed out".to_string()
        } else {
            "the download failed".to_string()
        }
    })?;
    if !response.status().is_success() {
        return Err(format!(
            "the download failed (HTTP {})",
            response.status().as_u16()
        ));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "the download was cut off".to_string())?
    {
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err("it is larger than it said".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.len() as u64 != expected {
        return Err(format!("{} of {expected} bytes arrived", bytes.len()));
    }
    Ok(bytes)
}

/// Fetches a message's attachments: images for the turn (when `inline_images`), the rest saved
/// to `<root>/inbox/<message>/`. Nothing here fails the run: what cannot be had is a note.
pub async fn fetch_attachments(
    attachments: &[AttachmentMeta],
    project: &Path,
    config: &FilesConfig,
    message: crate::ids::MessageId,
    inline_images: bool,
) -> Fetched {
    let mut out = Fetched::default();
    if attachments.is_empty() {
        return out;
    }
    let client = downloads();
    let timeout = std::time::Duration::from_secs(config.download_timeout_secs.max(1));
    let mut to_save: Vec<(String, Vec<u8>)> = Vec::new();
    for a in attachments {
        let name = sanitize_name(&a.name);
        if a.size > config.max_bytes {
            out.notes.push(format!(
                "`{name}` ({} bytes) was not read: files may have at most {} bytes here.",
                a.size, config.max_bytes
            ));
            continue;
        }
        if !allowed_url(&a.url, &config.download_hosts) {
            warn!(file = %name, "an attachment not on Discord's attachment hosts; not downloaded");
            out.notes.push(format!(
                "`{name}` was not read: it is not on Discord's attachment hosts."
            ));
            continue;
        }
        let bytes = match download(client, &a.url, config.max_bytes, a.size, timeout).await {
            Ok(bytes) => bytes,
            Err(why) => {
                warn!(file = %name, %why, "an attachment could not be downloaded");
                out.notes.push(format!(
                    "`{name}` could not be read: {why}. The message ran without it."
                ));
                continue;
            }
        };
        let room = inline_images && out.images.len() < config.max_images;
        match image_of(&bytes, config.max_image_bytes) {
            Ok(image) if room => out.images.push(image),
            Ok(_) => to_save.push((name, bytes)),
            Err(why) => {
                // Named or typed as an image but not one Claude can take: a file like any other.
                if looks_like_image(a) {
                    out.notes.push(format!(
                        "`{name}` was not shown to Claude as an image ({why}); it was saved as a file."
                    ));
                }
                to_save.push((name, bytes));
            }
        }
    }
    if to_save.is_empty() {
        return out;
    }
    let (project, config) = (project.to_path_buf(), config.clone());
    let save = move || FilesRoot::open(&project, &config)?.save_inbox(message, to_save);
    match tokio::task::spawn_blocking(save).await {
        Ok(Ok(saved)) => out.saved = saved,
        Ok(Err(e)) => {
            warn!(error = %e, "could not save attachments to the inbox");
            out.notes.push(format!(
                "The attached files could not be saved on the server: {e}"
            ));
        }
        Err(_) => {}
    }
    out
}

/// Whether the user meant `a` as an image (its content type or extension says so).
fn looks_like_image(a: &AttachmentMeta) -> bool {
    let typed = a
        .content_type
        .as_deref()
        .is_some_and(|t| t.trim_start().starts_with("image/"));
    let named = a.name.rsplit_once('.').is_some_and(|(_, ext)| {
        matches!(
            ext.to_ascii_lowercase().as_str(),
            "png" | "jpg" | "jpeg" | "gif" | "webp"
        )
    });
    typed || named
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `width`×`height` (header only; the API would see the rest).
    pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&width.to_be_bytes());
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn only_bytes_that_are_an_image_within_the_limits_become_one() {
        let ok = image_of(&png(100, 50), 5_000_000).expect("an image");
        assert_eq!(ok.media_type, "image/png");
        assert!(image_of(b"not an image at all", 5_000_000).is_err());
        // A text file that says it is a PNG, a JPEG magic without a frame header.
        assert!(image_of(b"\x89PNG but not really", 5_000_000).is_err());
        assert!(image_of(b"\xff\xd8\xff", 5_000_000).is_err());
        let huge = image_of(&png(9000, 10), 5_000_000).expect_err("too wide");
        assert!(huge.contains("9000"), "{huge}");
        assert!(image_of(&png(0, 10), 5_000_000).is_err());
        assert!(image_of(&png(10, 10), 10).is_err(), "over the byte limit");
        let gif = b"GIF89a\x10\x00\x10\x00\x00\x00\x00;";
        assert_eq!(image_of(gif, 100).expect("gif").media_type, "image/gif");
    }

    #[test]
    fn only_discords_attachment_hosts_are_downloaded_from() {
        let hosts = FilesConfig::default().download_hosts;
        assert!(allowed_url(
            "https://cdn.discordapp.com/attachments/1/2/a.png",
            &hosts
        ));
        assert!(allowed_url("https://media.discordapp.net/x.png", &hosts));
        assert!(!allowed_url(
            "https://cdn.discordapp.com.evil.example/a.png",
            &hosts
        ));
        assert!(!allowed_url(
            "https://evil.example/cdn.discordapp.com/a.png",
            &hosts
        ));
        assert!(!allowed_url(
            "https://user@cdn.discordapp.com/a.png",
            &hosts
        ));
        assert!(!allowed_url("file:///etc/passwd", &hosts));
        assert!(!allowed_url("not a url", &hosts));
        let proxied = vec!["127.0.0.1:4242".to_string()];
        assert!(allowed_url(
            "http://127.0.0.1:4242/attachments/1/a.txt",
            &proxied
        ));
        assert!(!allowed_url(
            "http://127.0.0.1:9999/attachments/1/a.txt",
            &proxied
        ));
    }
}
