//! Query-string parameters: parsed once from the raw query (repeated keys and `key[]` kept, as
//! OpenAI's `group_by=model&group_by=api_key_id`), with 400s that name the parameter.

use chrono::NaiveDate;
use chrono_tz::Tz;

use tollgate_core::attribution::check_user;
use tollgate_core::calendar::{self as time, parse_date};

use crate::error::ApiError;

#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| {
                let k = k.strip_suffix("[]").unwrap_or(&k).to_string();
                (k, v.into_owned())
            })
            .collect();
        Params(pairs)
    }

    /// A single-valued parameter; empty counts as absent; given twice with different values
    /// is a 400.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found: Option<&str> = None;
        for (k, v) in &self.0 {
            if k == name && !v.is_empty() {
                match found {
                    Some(prev) if prev != v => {
                        return Err(ApiError::invalid(
                            name,
                            format!("`{name}` was given more than once"),
                        ))
                    }
                    _ => found = Some(v),
                }
            }
        }
        Ok(found)
    }

    /// Every value of a multi-valued parameter (`k=a&k=b`, `k[]=a`, or `k=a,b`).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect()
    }

    /// Every end user a multi-valued parameter names, each checked (`attribution::check_user`).
    pub fn users(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let users = self.all(name);
        for u in &users {
            check_user(u).map_err(|e| ApiError::invalid(name, format!("`{name}` {e}")))?;
        }
        Ok(users)
    }

    /// `timezone`: an IANA zone name; UTC by default.
    pub fn timezone(&self) -> Result<Tz, ApiError> {
        match self.get("timezone")? {
            None => Ok(chrono_tz::UTC),
            Some(name) => time::parse_tz(name).ok_or_else(|| {
                ApiError::invalid(
                    "timezone",
                    format!("unknown time zone `{name}`: use an IANA name such as `Europe/Paris`"),
                )
            }),
        }
    }

    /// A `YYYY-MM-DD` date.
    pub fn date(&self, name: &str) -> Result<Option<NaiveDate>, ApiError> {
        match self.get(name)? {
            None => Ok(None),
            Some(v) => parse_date(v).map(Some).ok_or_else(|| {
                ApiError::invalid(
                    name,
                    format!("`{name}` must be a date YYYY-MM-DD (1970 to 9999), got `{v}`"),
                )
            }),
        }
    }

    /// An integer within `[min, max]`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.get(name)? {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::invalid(
                    name,
                    format!("`{name}` must be an integer from {min} to {max}, got `{v}`"),
                )),
            },
        }
    }

    /// An instant: `YYYY-MM-DD` (that local day's start, or with `end_of_day` the next day's
    /// start, so an end date is inclusive), RFC 3339, or Unix seconds.
    pub fn instant(&self, name: &str, tz: Tz, end_of_day: bool) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(name)? else {
            return Ok(None);
        };
        time::parse_instant(v, tz, end_of_day).map(Some).ok_or_else(|| {
            ApiError::invalid(
                name,
                format!(
                    "`{name}` must be a date YYYY-MM-DD, an RFC 3339 time or Unix seconds, got `{v}`"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_and_bracketed_keys() {
        let p = Params::parse(Some(
            "group_by=model&group_by[]=api_key_id&models=a,b&x=&tz=Europe%2FParis",
        ));
        assert_eq!(p.all("group_by"), ["model", "api_key_id"]);
        assert_eq!(p.all("models"), ["a", "b"]);
        assert_eq!(p.get("x").unwrap(), None);
        assert_eq!(p.get("tz").unwrap(), Some("Europe/Paris"));
        let twice = Params::parse(Some("limit=1&limit=2"));
        assert_eq!(
            twice.get("limit").unwrap_err().param.as_deref(),
            Some("limit")
        );
    }

    #[test]
    fn validates_values_naming_the_parameter() {
        let p = Params::parse(Some(
            "timezone=Nowhere/City&startDate=2027-02-29&limit=0&start=yesterday",
        ));
        assert_eq!(p.timezone().unwrap_err().param.as_deref(), Some("timezone"));
        assert_eq!(
            p.date("startDate").unwrap_err().param.as_deref(),
            Some("startDate")
        );
        assert_eq!(
            p.int("limit", 1, 10).unwrap_err().param.as_deref(),
            Some("limit")
        );
        let err = p.instant("start", chrono_tz::UTC, false).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("start"));
        let ok = Params::parse(Some(
            "a=2028-02-29&b=2028-02-29&c=1700000000&d=2028-02-29T10:00:00%2B01:00",
        ));
        let utc = chrono_tz::UTC;
        assert_eq!(
            ok.instant("a", utc, false).unwrap(),
            Some(1_835_395_200_000)
        );
        assert_eq!(ok.instant("b", utc, true).unwrap(), Some(1_835_481_600_000));
        assert_eq!(
            ok.instant("c", utc, false).unwrap(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            ok.instant("d", utc, false).unwrap(),
            Some(1_835_395_200_000 + 9 * 3_600_000)
        );
    }
}
