//! Exact money. Every amount is an integer: costs in nano-USD (10^-9 USD), unit prices in
//! nano-USD per million tokens. Decimal text is parsed digit by digit, never through a float.

/// nano-USD in one USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("{0:?} is not a decimal number")]
    NotANumber(String),
    #[error("{0:?} has more precision than 1e-9 USD per million tokens")]
    TooPrecise(String),
    #[error("{0:?} is negative or too large")]
    OutOfRange(String),
}

/// Parses a non-negative decimal (`"2.50"`, `"0.075"`, `"2.5e-06"`) and scales it by
/// 10^`scale`, exactly. Fails when digits would be lost.
pub fn parse_decimal_scaled(text: &str, scale: i32) -> Result<i64, MoneyError> {
    let t = text.trim();
    let err = || MoneyError::NotANumber(text.to_string());
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| err())?),
        None => (t, 0),
    };
    if mantissa.starts_with('-') {
        return Err(MoneyError::OutOfRange(text.to_string()));
    }
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err());
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    // value = digits * 10^(exp - frac_len); result = value * 10^scale
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    // i64: an exponent near i32's limits must be out of range, not an overflow.
    let mut shift = i64::from(exp) + i64::from(scale) - frac_part.len() as i64;
    let mut digits = digits.to_string();
    // Drop trailing zeros that a negative shift would divide away anyway.
    while shift < 0 && digits.ends_with('0') {
        digits.pop();
        shift += 1;
    }
    if digits.is_empty() {
        return Ok(0);
    }
    if shift < 0 {
        return Err(MoneyError::TooPrecise(text.to_string()));
    }
    let base: i128 = digits
        .parse()
        .map_err(|_| MoneyError::OutOfRange(text.to_string()))?;
    let factor = u32::try_from(shift)
        .ok()
        .and_then(|shift| 10i128.checked_pow(shift))
        .ok_or_else(|| MoneyError::OutOfRange(text.to_string()))?;
    let v = base
        .checked_mul(factor)
        .ok_or_else(|| MoneyError::OutOfRange(text.to_string()))?;
    i64::try_from(v).map_err(|_| MoneyError::OutOfRange(text.to_string()))
}

/// USD per million tokens (decimal text) to nano-USD per million tokens.
pub fn usd_per_mtok_to_nanos(text: &str) -> Result<i64, MoneyError> {
    parse_decimal_scaled(text, 9)
}

/// Divides, rounding half away from zero (amounts here are never negative). The one place a
/// cost is rounded.
pub fn div_round_half_up(numerator: i128, denominator: i128) -> i128 {
    let q = numerator / denominator;
    let r = numerator % denominator;
    // `r >= d - r` is `2r >= d` without the overflow of `2r` for divisors past i128::MAX / 2.
    if r >= denominator - r {
        q + 1
    } else {
        q
    }
}

/// nano-USD as a decimal USD string with all nine places, for display and exports.
pub fn nanos_to_usd_string(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    format!("{sign}{}.{:09}", n / 1_000_000_000, n % 1_000_000_000)
}

/// nano-USD as a float of USD, for the JSON fields whose published shape is a number
/// (e.g. `total_cost: 4.215`). Display only: sums are always taken over the integers first.
pub fn nanos_to_usd_f64(nanos: i64) -> f64 {
    nanos as f64 / NANOS_PER_USD as f64
}

/// nano-USD in credits at `per_usd` credits per USD, rounded down (toward −∞).
pub fn nanos_to_credits(nanos: i64, per_usd: i64) -> i64 {
    let credits = (i128::from(nanos) * i128::from(per_usd)).div_euclid(i128::from(NANOS_PER_USD));
    // `per_usd` ≤ 10^9 (a divisor of it), so |credits| ≤ |nanos| and this always fits.
    i64::try_from(credits).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(usd_per_mtok_to_nanos("2.50").unwrap(), 2_500_000_000);
        assert_eq!(usd_per_mtok_to_nanos("0.075").unwrap(), 75_000_000);
        assert_eq!(usd_per_mtok_to_nanos("15").unwrap(), 15_000_000_000);
        assert_eq!(usd_per_mtok_to_nanos("0").unwrap(), 0);
        assert_eq!(usd_per_mtok_to_nanos(".5").unwrap(), 500_000_000);
        // LiteLLM writes USD per token in exponent form: 2.5e-06/token = 2.5/Mtok.
        assert_eq!(parse_decimal_scaled("2.5e-06", 15).unwrap(), 2_500_000_000);
        assert_eq!(parse_decimal_scaled("1.25E-7", 15).unwrap(), 125_000_000);
        assert_eq!(
            parse_decimal_scaled("0.000015", 15).unwrap(),
            15_000_000_000
        );
    }

    #[test]
    fn rejects_what_would_lose_digits() {
        assert!(matches!(
            usd_per_mtok_to_nanos("0.0000000001"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            usd_per_mtok_to_nanos("-1"),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!(matches!(
            usd_per_mtok_to_nanos("abc"),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!(
            usd_per_mtok_to_nanos(""),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!(
            usd_per_mtok_to_nanos("1e30"),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn rounds_half_up_once() {
        assert_eq!(div_round_half_up(1_500_000, 1_000_000), 2);
        assert_eq!(div_round_half_up(1_499_999, 1_000_000), 1);
        assert_eq!(div_round_half_up(0, 1_000_000), 0);
        assert_eq!(nanos_to_usd_string(1_234_567_891), "1.234567891");
        assert_eq!(nanos_to_usd_string(5), "0.000000005");
    }
}
