//! What a diff would write when it is applied on the host (to restore a workspace, or to
//! publish a branch), as git states it in the diff itself: binary patches are compressed and
//! say their full size (`literal <bytes>`), so a small diff can stand for gigabytes. The
//! sandbox that made the diff is not trusted to say; the host reads it from the diff.

use crate::git::mib;

/// An upper bound of the bytes applying `diff` writes: each binary file's new size as its
/// patch states it, plus every added line of text.
pub fn expanded_bytes(diff: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut binary_header = false;
    for line in diff.split(|&byte| byte == b'\n') {
        if binary_header {
            // The first block after the header is the new content; a second, the old.
            total = total.saturating_add(stated_size(line).unwrap_or(0));
            binary_header = false;
        } else if line == b"GIT binary patch" {
            binary_header = true;
        } else if line.starts_with(b"+") && !line.starts_with(b"+++ ") {
            total = total.saturating_add(line.len() as u64);
        }
    }
    total
}

/// The size in `literal <bytes>` or `delta <bytes>`.
fn stated_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text
        .strip_prefix("literal ")
        .or_else(|| text.strip_prefix("delta "))?;
    size.trim().parse().ok()
}

/// Refuses a diff that would write more than `max_bytes` on the host, in words for the task.
pub fn check_expansion(diff: &[u8], max_bytes: u64) -> Result<(), String> {
    let expanded = expanded_bytes(diff);
    if expanded > max_bytes {
        return Err(format!(
            "the change would write {} when applied, over the bound of {}",
            mib(expanded),
            mib(max_bytes)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_patches_count_at_their_stated_size() {
        let diff = b"diff --git a/zeros b/zeros\nnew file mode 100644\nindex 0000000..1111111\n\
GIT binary patch\nliteral 629145600\nzcmeIuF#!q%00000\n\nliteral 0\nHcmV?d00001\n\n\
diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1 +1,2 @@\n one\n+two\n";
        assert_eq!(expanded_bytes(diff), 629_145_600 + 4);
        assert!(check_expansion(diff, 1 << 30).is_ok());
        let refused = check_expansion(diff, 64 << 20).unwrap_err();
        assert!(
            refused.contains("601 MiB") && refused.contains("64 MiB"),
            "{refused}"
        );
    }
}
