//! The `bandwidth` capability from a pod's annotations, and the Kubernetes quantity parser it
//! needs. Pure functions: no I/O, no CNI exec.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// The annotations Kubernetes uses for pod bandwidth limits.
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// The `bandwidth` capability from the pod's annotations, as containerd builds it: rates
/// in bits/s from Kubernetes quantities ("10M", "1Gi"), bursts of `u32::MAX` bits. Values
/// outside 1 kbit..1 Pbit are refused, as kubelet's `ExtractPodBandwidthResources` does.
/// The error names the annotation.
pub fn bandwidth(annotations: &BTreeMap<String, String>) -> Result<Option<Value>, String> {
    let rate = |key: &str| -> Result<Option<u64>, String> {
        let Some(text) = annotations.get(key) else {
            return Ok(None);
        };
        let bits =
            parse_quantity(text).map_err(|why| format!("annotation {key}={text:?}: {why}"))?;
        if bits < 1_000 {
            return Err(format!(
                "annotation {key}={text:?}: unreasonably small (< 1kbit)"
            ));
        }
        if bits > 1_000_000_000_000_000 {
            return Err(format!(
                "annotation {key}={text:?}: unreasonably large (> 1Pbit)"
            ));
        }
        Ok(Some(bits as u64))
    };
    let ingress = rate(INGRESS_BANDWIDTH)?;
    let egress = rate(EGRESS_BANDWIDTH)?;
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let mut bw = Map::new();
    if let Some(r) = ingress {
        bw.insert("ingressRate".into(), json!(r));
        bw.insert("ingressBurst".into(), json!(u32::MAX));
    }
    if let Some(r) = egress {
        bw.insert("egressRate".into(), json!(r));
        bw.insert("egressBurst".into(), json!(u32::MAX));
    }
    Ok(Some(Value::Object(bw)))
}

/// A Kubernetes resource quantity (`<number><suffix>`: decimal SI `k M G T P E`, binary
/// `Ki Mi Gi Ti Pi Ei`, `m` `u` `n`, or an exponent `e3`), rounded up to an integer like
/// `Quantity.Value()`. Exact integer arithmetic, no floats.
pub fn parse_quantity(text: &str) -> Result<u128, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (digits, frac_len) = parse_number(number)?;
    let (pow10, pow2) = suffix_powers(suffix)?;
    let exp10 = pow10 - i32::try_from(frac_len).map_err(|_| "too long".to_string())?;
    if !(-60..=30).contains(&exp10) {
        return Err("out of range".into());
    }
    let too_big = || "out of range".to_string();
    let scaled = digits.checked_mul(1u128 << pow2).ok_or_else(too_big)?;
    if exp10 >= 0 {
        scaled
            .checked_mul(10u128.pow(exp10.unsigned_abs()))
            .ok_or_else(too_big)
    } else {
        let div = 10u128
            .checked_pow(exp10.unsigned_abs())
            .ok_or_else(too_big)?;
        Ok(scaled.div_ceil(div))
    }
}

/// A quantity's number (`+` allowed, `-` refused, one optional `.`) as its digits without
/// the point and the count of digits after it: value = digits × 10^−frac_len.
fn parse_number(number: &str) -> Result<(u128, usize), String> {
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.starts_with('-') {
        return Err("must not be negative".into());
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a quantity (e.g. 10M, 1Gi, 500k)".into());
    }
    let all = format!("{int}{frac}");
    let significant = all.trim_start_matches('0');
    let digits: u128 = if significant.is_empty() {
        0
    } else {
        significant
            .parse()
            .map_err(|_| "too many digits".to_string())?
    };
    Ok((digits, frac.len()))
}

/// A suffix as the powers of ten and of two it multiplies by.
fn suffix_powers(suffix: &str) -> Result<(i32, u32), String> {
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e if e.starts_with(['e', 'E']) => (
            e[1..].parse().map_err(|_| format!("bad exponent {e:?}"))?,
            0,
        ),
        other => return Err(format!("unknown suffix {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_become_bits_like_kubernetes() {
        for (text, want) in [
            ("10M", 10_000_000u128),
            ("1Gi", 1 << 30),
            ("500k", 500_000),
            ("1.5M", 1_500_000),
            ("1.1k", 1_100),
            ("100", 100),
            ("2e3", 2_000),
            ("1500m", 2),
            ("0.5", 1),
            ("1Ki", 1024),
        ] {
            assert_eq!(parse_quantity(text), Ok(want), "{text}");
        }
        for bad in ["", "M", "10X", "-1M", "1.2.3k", "abc", "10 M"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn bandwidth_capability_and_refusals_name_the_annotation() {
        let mut ann = BTreeMap::new();
        assert_eq!(bandwidth(&ann), Ok(None));
        ann.insert(INGRESS_BANDWIDTH.to_string(), "10M".to_string());
        assert_eq!(
            bandwidth(&ann),
            Ok(Some(
                json!({"ingressRate": 10_000_000u64, "ingressBurst": u32::MAX})
            ))
        );
        ann.insert(EGRESS_BANDWIDTH.to_string(), "1Gi".to_string());
        assert_eq!(
            bandwidth(&ann).unwrap().unwrap()["egressRate"],
            json!(1u64 << 30)
        );
        ann.insert(EGRESS_BANDWIDTH.to_string(), "lots".to_string());
        let err = bandwidth(&ann).unwrap_err();
        assert!(err.contains(EGRESS_BANDWIDTH), "{err}");
        ann.insert(EGRESS_BANDWIDTH.to_string(), "10".to_string());
        assert!(bandwidth(&ann).unwrap_err().contains("small"));
        ann.insert(EGRESS_BANDWIDTH.to_string(), "2P".to_string());
        assert!(bandwidth(&ann).unwrap_err().contains("large"));
    }
}
