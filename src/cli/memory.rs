//! A memory size as `docker run --memory` reads it (`512m`, `1g`): service limits and the resource
//! guard's `--max-memory`, `--default-memory` and `--min-free-memory`.

/// A memory size: bytes, or a number with `k`, `m` or `g` (as `docker run --memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory(pub u64);

impl Memory {
    pub(crate) fn parse(text: &str) -> Result<Memory, String> {
        let text = text.trim().to_ascii_lowercase();
        let text = text.strip_suffix('b').unwrap_or(&text);
        let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((at, _)) => text.split_at(at),
            None => (text, ""),
        };
        let shift = match unit {
            "" => 0,
            "k" => 10,
            "m" => 20,
            "g" => 30,
            _ => {
                return Err(format!(
                    "{text:?} is not a memory size such as \"512m\" or \"1g\""
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a memory size such as \"512m\" or \"1g\""))?;
        let bytes = n
            .checked_mul(1 << shift)
            .ok_or_else(|| format!("{text:?} is too large"))?;
        // Docker's own minimum is 6 MiB; anything smaller is a typo for a unit.
        if bytes < 6 << 20 {
            return Err(format!("{text:?} is below Docker's minimum of 6m"));
        }
        Ok(Memory(bytes))
    }
}

pub(crate) use crate::docker::usage::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_as_docker_reads_them() {
        assert_eq!(Memory::parse("512m").unwrap().0, 512 << 20);
        assert_eq!(Memory::parse("1G").unwrap().0, 1 << 30);
        assert_eq!(Memory::parse("1gb").unwrap().0, 1 << 30);
        assert_eq!(Memory::parse("8388608").unwrap().0, 8 << 20);
        for bad in ["", "m", "5x", "1m", "-1g", "99999999999999999999g"] {
            assert!(Memory::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(human_bytes(512 << 20), "512m");
        assert_eq!(human_bytes(3 << 29), "1.5g");
        assert_eq!(human_bytes(576 << 10), "576k");
    }
}
