//! Deterministic, plausible outputs derived from a hash of the domain, shaped so the
//! analysis rules have something to reason over.

use serde_json::{json, Value};

/// The services this worker plays.
pub const SERVICES: [&str; 6] = [
    "serp-intelligence",
    "technical-seo",
    "domain-authority",
    "competitive-intelligence",
    "vitals-monitor",
    "bitware-content-granulator",
];

/// Whether `service` is one this worker plays.
pub fn is_known(service: &str) -> bool {
    SERVICES.contains(&service)
}

/// FNV-1a: stable across platforms and runs.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A number in `lo..=hi` derived from the domain and a salt.
fn pick(domain: &str, salt: &str, lo: u64, hi: u64) -> u64 {
    lo + fnv1a(&format!("{domain}/{salt}")) % (hi - lo + 1)
}

/// The output of `service` for `input` (`{domain, parameters, upstream}`).
pub fn output(service: &str, input: &Value) -> Value {
    let domain = input["domain"].as_str().unwrap_or("example.com");
    let p = |salt: &str, lo: u64, hi: u64| pick(domain, salt, lo, hi);
    match service {
        "serp-intelligence" => {
            let stem = domain.split('.').next().unwrap_or(domain);
            json!({
                "keywords_tracked": p("kw", 50, 500),
                "avg_position": p("pos", 3, 60) as f64 / 2.0,
                "top10_keywords": p("top10", 0, 80),
                "visibility_score": p("vis", 5, 95),
                "top_competitors": [format!("{stem}-rival.com"), format!("best{stem}.net"), format!("{stem}hub.io")],
            })
        }
        "technical-seo" => json!({
            "health_score": p("health", 35, 99),
            "pages_crawled": p("pages", 20, 2000),
            "crawl_errors": p("errors", 0, 40),
            "broken_links": p("broken", 0, 60),
            "missing_meta_descriptions": p("meta", 0, 120),
            "https": p("https", 0, 9) > 0,
            "mobile_friendly": p("mobile", 0, 4) > 0,
        }),
        "domain-authority" => json!({
            "domain_authority": p("da", 5, 90),
            "referring_domains": p("rd", 10, 5000),
            "backlinks": p("bl", 100, 90000),
            "spam_score": p("spam", 0, 30),
        }),
        "vitals-monitor" => {
            let lcp = p("lcp", 900, 5200);
            let cls = p("cls", 0, 40) as f64 / 100.0;
            let inp = p("inp", 80, 700);
            json!({
                "lcp_ms": lcp,
                "cls": cls,
                "inp_ms": inp,
                "performance_score": p("perf", 20, 99),
                "passes_core_web_vitals": lcp <= 2500 && cls <= 0.1 && inp <= 200,
            })
        }
        "competitive-intelligence" => {
            // Builds on serp-intelligence's output when the orchestrator passed it along.
            let upstream = &input["upstream"]["serp-intelligence"];
            let from_serp = upstream["top_competitors"].as_array().is_some();
            let competitors: Vec<Value> = upstream["top_competitors"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![json!(format!("rival-of-{domain}"))])
                .into_iter()
                .map(|c| {
                    let name = c.as_str().unwrap_or("").to_string();
                    json!({ "domain": name, "keyword_overlap": pick(&name, domain, 5, 70) })
                })
                .collect();
            json!({
                "competitors": competitors,
                "share_of_voice": p("sov", 2, 60),
                "gap_keywords": p("gap", 0, 300),
                "based_on_serp": from_serp,
            })
        }
        "bitware-content-granulator" => {
            let topic = input["parameters"]["topic"].as_str().unwrap_or("general");
            json!({
                "template_ref": input["template_ref"].clone(),
                "topic": topic,
                "structure": { "modules": pick(topic, "modules", 3, 8), "lessons": pick(topic, "lessons", 10, 40) },
            })
        }
        _ => Value::Null,
    }
}

/// Tokens a request "used", for cost reporting.
pub fn usage(service: &str, input: &Value) -> Value {
    let domain = input["domain"].as_str().unwrap_or("");
    json!({ "tokens": pick(domain, service, 100, 1000) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_deterministic_per_domain() {
        let input = json!({"domain": "example.com"});
        for service in SERVICES {
            assert_eq!(output(service, &input), output(service, &input), "{service}");
            assert!(!output(service, &input).is_null(), "{service}");
        }
        assert_ne!(output("technical-seo", &input), output("technical-seo", &json!({"domain": "other.org"})));
    }

    #[test]
    fn competitive_intelligence_uses_the_serp_output() {
        let serp = output("serp-intelligence", &json!({"domain": "shop.com"}));
        let input = json!({"domain": "shop.com", "upstream": {"serp-intelligence": serp}});
        let out = output("competitive-intelligence", &input);
        assert_eq!(out["based_on_serp"], true);
        assert_eq!(out["competitors"][0]["domain"], "shop-rival.com");
    }
}
