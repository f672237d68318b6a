//! Turning parsed options back into cargo's own flags, to hand them to cargo unchanged.

pub(super) fn push_flag(out: &mut Vec<String>, flag: &str, on: bool) {
    if on {
        out.push(flag.to_string());
    }
}

pub(super) fn push_opt(out: &mut Vec<String>, flag: &str, value: &Option<String>) {
    if let Some(value) = value {
        out.push(flag.to_string());
        out.push(value.clone());
    }
}

pub(super) fn push_each(out: &mut Vec<String>, flag: &str, values: &[String]) {
    for value in values {
        out.push(flag.to_string());
        out.push(value.clone());
    }
}
