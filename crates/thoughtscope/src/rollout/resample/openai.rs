//! Continuations from any OpenAI-compatible completions server (vLLM, llama.cpp's servers, hosted
//! APIs): [`OpenAiProvider`], a [`RolloutProvider`] that sends upstream's raw-prompt requests.
//!
//! Mirrors the API path of thought-anchors `generate_rollouts.py` (`make_api_request`): one
//! `POST {base_url}/completions` with the chunk's prompt text, `max_tokens`, `temperature` and
//! `top_p`; here also `n` (choices per request) and a `seed` per request, which upstream never
//! sends (so its API rollouts cannot be reproduced one by one).
//!
//! - Requests run on `concurrency` threads (a bounded pool per chunk); the results are put back in
//!   rollout order, so the records do not depend on which request finished first.
//! - Connection errors, HTTP 5xx and 429 are retried with exponential backoff (bounded count and
//!   wait); any other HTTP error stops the run with the server's message.
//! - With `choices_per_request` n > 1, one request asks for n choices with the seed of its first
//!   rollout; a server that returns fewer (llama-cpp-python ignores `n`) gets the missing
//!   rollouts as separate requests, each with its own rollout's seed.
//! - Seeds: the server receives the low 31 bits of each rollout's seed (llama.cpp reads a 32-bit
//!   seed; every server reads the same number). Whether equal seeds give equal text depends on
//!   the server (vLLM: yes per request; batching servers may not be bit-reproducible).
//!
//! HTTP is `ureq` without TLS: plain `http://` only (local servers, cluster nodes, proxies);
//! `https://` needs the `labeller-tls` feature, as the chunk labeller.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::engine::{Continuation, DecodeSettings, ProviderIdentity, RolloutProvider};
use crate::{Error, Result};

/// Where and how to call the server.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// The API root as OpenAI clients take it, e.g. `http://127.0.0.1:8000/v1`; requests go to
    /// `{base_url}/completions` and `{base_url}/models`.
    pub base_url: String,
    /// The model id sent with each request; `None`: the server's only model (`GET /models`).
    pub model: Option<String>,
    /// Bearer token (e.g. read from the environment variable `--api-key-env` names).
    pub api_key: Option<String>,
    /// Requests in flight at once (threads).
    pub concurrency: usize,
    /// Choices asked per request (`n`); 1 gives every rollout its own request and seed.
    pub choices_per_request: usize,
    /// Send `seed` with each request (off for servers that reject the field).
    pub send_seed: bool,
    /// Retries after the first try, on connection errors, 5xx and 429.
    pub retries: usize,
    /// First backoff; doubles each retry, capped at `MAX_BACKOFF`.
    pub backoff: Duration,
    /// Limit for one request, connection to last byte (a long continuation takes a while).
    pub request_timeout: Duration,
}

/// The longest wait between two tries.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl OpenAiConfig {
    /// Defaults for `base_url`: 8 requests in flight, one choice per request, seeds sent,
    /// 5 retries from 0.5 s, 10 minutes per request.
    pub fn new(base_url: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: None,
            api_key: None,
            concurrency: 8,
            choices_per_request: 1,
            send_seed: true,
            retries: 5,
            backoff: Duration::from_millis(500),
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// A [`RolloutProvider`] over an OpenAI-compatible `/completions` endpoint.
pub struct OpenAiProvider {
    config: OpenAiConfig,
    base_url: String,
    model: String,
    agent: ureq::Agent,
}

impl OpenAiProvider {
    /// Check the settings, ask the server for its models (`GET {base_url}/models`) and pick the
    /// one to use: `config.model`, which must be listed, or the server's only model.
    pub fn connect(config: OpenAiConfig) -> Result<OpenAiProvider> {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
            return Err(Error::invalid(format!("--base-url {base_url:?}: expected http://host:port/v1")));
        }
        if base_url.starts_with("https://") && !cfg!(feature = "labeller-tls") {
            return Err(Error::invalid(format!(
                "--base-url {base_url}: https needs thoughtscope built with the `labeller-tls` feature"
            )));
        }
        if config.concurrency == 0 || config.choices_per_request == 0 {
            return Err(Error::invalid("--concurrency and --choices-per-request must be at least 1"));
        }
        let mut agent_config = ureq::Agent::config_builder()
            .timeout_global(Some(config.request_timeout))
            .http_status_as_error(false);
        if is_loopback(&base_url) {
            // A local server never sits behind the environment's HTTP proxy.
            agent_config = agent_config.proxy(None);
        }
        let agent: ureq::Agent = agent_config.build().into();
        let mut provider = OpenAiProvider { config, base_url, model: String::new(), agent };
        let models = provider.server_models()?;
        provider.model = match &provider.config.model {
            Some(model) if models.contains(model) => model.clone(),
            Some(model) => {
                return Err(Error::invalid(format!(
                    "{}/models: the server does not serve model {model:?} (it serves {models:?})",
                    provider.base_url
                )))
            }
            None if models.len() == 1 => models[0].clone(),
            None => {
                return Err(Error::invalid(format!(
                    "{}/models: the server serves {} models ({models:?}); choose one with --model",
                    provider.base_url,
                    models.len()
                )))
            }
        };
        Ok(provider)
    }

    /// The model id the requests name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The ids `GET {base_url}/models` lists (`data[].id`).
    pub(crate) fn server_models(&self) -> Result<Vec<String>> {
        let url = format!("{}/models", self.base_url);
        let reply = self.with_retries(&url, || {
            let mut request = self.agent.get(&url);
            if let Some(key) = &self.config.api_key {
                request = request.header("Authorization", &format!("Bearer {key}"));
            }
            request.call()
        })?;
        let ids: Option<Vec<String>> = reply
            .get("data")
            .and_then(Value::as_array)
            .map(|data| data.iter().filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string)).collect());
        match ids {
            Some(ids) if !ids.is_empty() => Ok(ids),
            _ => Err(Error::Other(format!("{url}: no data[].id in the reply: {}", snippet(&reply.to_string())))),
        }
    }

    /// One completions request for `n` choices; the continuations in choice order.
    pub fn complete(&self, prompt: &str, n: usize, seed: u64, settings: &DecodeSettings) -> Result<Vec<Continuation>> {
        let url = format!("{}/completions", self.base_url);
        let mut body = json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "n": n,
            "stream": false,
        });
        if self.config.send_seed {
            body["seed"] = json!(server_seed(seed));
        }
        let body = body.to_string();
        let reply = self.with_retries(&url, || {
            let mut request = self.agent.post(&url).header("Content-Type", "application/json");
            if let Some(key) = &self.config.api_key {
                request = request.header("Authorization", &format!("Bearer {key}"));
            }
            request.send(body.as_str())
        })?;
        parse_completion(&url, &reply)
    }

    /// Send with `send` until a reply that is neither a connection error, a 5xx nor a 429, at
    /// most `1 + retries` times with exponential backoff; the reply parsed as JSON.
    fn with_retries(
        &self,
        url: &str,
        send: impl Fn() -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let started = Instant::now();
        let mut wait = self.config.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            let failure = match send() {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let text = response
                        .body_mut()
                        .with_config()
                        .limit(1 << 30)
                        .read_to_string()
                        .map_err(|e| Error::Other(format!("{url}: reading the reply: {e}")))?;
                    if (200..300).contains(&status) {
                        return serde_json::from_str(&text).map_err(|e| {
                            Error::Other(format!("{url}: the reply is not JSON ({e}): {}", snippet(&text)))
                        });
                    }
                    let message = format!("HTTP {status}: {}", snippet(&text));
                    if status != 429 && status < 500 {
                        let hint = if matches!(status, 401 | 403) && self.config.api_key.is_none() {
                            " (no API key given: --api-key-env)"
                        } else {
                            ""
                        };
                        return Err(Error::Other(format!("{url}: {message}{hint}")));
                    }
                    message
                }
                Err(e) => format!("connection: {e}"),
            };
            if tries > self.config.retries {
                return Err(Error::Other(format!(
                    "{url}: {failure} (gave up after {tries} tries in {:.1} s)",
                    started.elapsed().as_secs_f64()
                )));
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }

    /// Continuations for the rollouts `first..first + n` (seeds `seeds`): one request for `n`
    /// choices, then one request per rollout the server left out.
    fn group(&self, prompt: &str, seeds: &[u64], settings: &DecodeSettings) -> Result<Vec<Continuation>> {
        let mut got = self.complete(prompt, seeds.len(), seeds[0], settings)?;
        got.truncate(seeds.len());
        for &seed in &seeds[got.len()..] {
            let mut one = self.complete(prompt, 1, seed, settings)?;
            if one.is_empty() {
                return Err(Error::Other(format!("{}/completions: a reply without choices", self.base_url)));
            }
            got.push(one.swap_remove(0));
        }
        Ok(got)
    }
}

impl RolloutProvider for OpenAiProvider {
    /// `openai:<base URL>` and the server's model id: a resume against another server or model
    /// is refused. The server does not tell its weights or tokenizer, so those stay empty.
    fn identity(&self) -> ProviderIdentity {
        ProviderIdentity {
            provider: format!("openai:{}", self.base_url),
            model: self.model.clone(),
            weights_hash: String::new(),
            tokenizer: String::new(),
        }
    }

    fn continuations(
        &self,
        prompt: &str,
        seeds: &[u64],
        settings: &DecodeSettings,
        on_finished: &mut dyn FnMut(usize),
    ) -> Result<Vec<Continuation>> {
        settings.sampling()?;
        let groups: Vec<&[u64]> = seeds.chunks(self.config.choices_per_request).collect();
        let next = AtomicUsize::new(0);
        let threads = self.config.concurrency.min(groups.len()).max(1);
        let mut results: Vec<Option<Vec<Continuation>>> = vec![None; groups.len()];
        let mut first_error = None;
        std::thread::scope(|scope| {
            let (sender, receiver) = mpsc::channel();
            for _ in 0..threads {
                let (sender, next, groups) = (sender.clone(), &next, &groups);
                scope.spawn(move || loop {
                    let g = next.fetch_add(1, Ordering::Relaxed);
                    if g >= groups.len() {
                        break;
                    }
                    let result = self.group(prompt, groups[g], settings);
                    let failed = result.is_err();
                    if sender.send((g, result)).is_err() || failed {
                        // After a failure no new request starts (the others finish theirs).
                        next.store(groups.len(), Ordering::Relaxed);
                        break;
                    }
                });
            }
            drop(sender);
            for (g, result) in receiver {
                match result {
                    Ok(continuations) => {
                        for c in &continuations {
                            on_finished(c.new_tokens);
                        }
                        results[g] = Some(continuations);
                    }
                    Err(e) => {
                        next.store(groups.len(), Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
        });
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(results.into_iter().flat_map(|r| r.expect("every group finished")).collect())
    }
}

/// The seed a server receives for a rollout seed: its low 31 bits (llama.cpp takes 32-bit seeds,
/// and some servers read the field as a signed 32-bit integer).
pub(crate) fn server_seed(seed: u64) -> u64 {
    seed & 0x7fff_ffff
}

/// The continuations of a completions reply, in choice order (`choices[].index`, else position):
/// `text`, `finish_reason` `"stop"` for a stop, and `usage.completion_tokens` shared among the
/// choices (servers report one total per request; with one choice it is exact).
pub(crate) fn parse_completion(url: &str, reply: &Value) -> Result<Vec<Continuation>> {
    let bad = |what: &str| Error::Other(format!("{url}: {what} in the reply: {}", snippet(&reply.to_string())));
    let choices = reply.get("choices").and_then(Value::as_array).ok_or_else(|| bad("no `choices` array"))?;
    let mut indexed = Vec::with_capacity(choices.len());
    for (position, choice) in choices.iter().enumerate() {
        let text = choice.get("text").and_then(Value::as_str).ok_or_else(|| bad("a choice without `text`"))?;
        let index = choice.get("index").and_then(Value::as_u64).map(|i| i as usize).unwrap_or(position);
        let stopped = choice.get("finish_reason").and_then(Value::as_str) == Some("stop");
        indexed.push((index, text.to_string(), stopped));
    }
    indexed.sort_by_key(|c| c.0);
    let total = reply.pointer("/usage/completion_tokens").and_then(Value::as_u64).unwrap_or(0) as usize;
    let n = indexed.len().max(1);
    Ok(indexed
        .into_iter()
        .enumerate()
        .map(|(i, (_, text, stopped))| Continuation {
            text,
            // Split the request's total evenly, the remainder to the first choices.
            new_tokens: total / n + usize::from(i < total % n),
            stopped,
        })
        .collect())
}

fn is_loopback(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url);
    ["127.", "localhost:", "localhost/", "[::1]"].iter().any(|prefix| host.starts_with(prefix))
}

fn snippet(text: &str) -> String {
    let cut: String = text.chars().take(300).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_in_choice_order() {
        let reply = json!({
            "choices": [
                {"index": 1, "text": " b", "finish_reason": "length"},
                {"index": 0, "text": " a \\boxed{5}", "finish_reason": "stop"}
            ],
            "usage": {"completion_tokens": 7}
        });
        let c = parse_completion("u", &reply).unwrap();
        assert_eq!((c[0].text.as_str(), c[0].stopped, c[0].new_tokens), (" a \\boxed{5}", true, 4));
        assert_eq!((c[1].text.as_str(), c[1].stopped, c[1].new_tokens), (" b", false, 3));
        let error = parse_completion("http://x/v1/completions", &json!({"error": "busy"})).unwrap_err().to_string();
        assert!(error.contains("http://x/v1/completions") && error.contains("choices"), "{error}");
        assert!(parse_completion("u", &json!({"choices": [{"index": 0}]})).is_err());
    }

    #[test]
    fn seeds_fit_32_bit_servers() {
        assert_eq!(server_seed(u64::MAX), 0x7fff_ffff);
        assert_eq!(server_seed(44), 44);
    }

    #[test]
    fn a_closed_port_is_retried_then_named() {
        // Bind then drop: nothing listens on the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = OpenAiConfig {
            retries: 2,
            backoff: Duration::from_millis(10),
            ..OpenAiConfig::new(format!("http://127.0.0.1:{port}/v1"))
        };
        let error = OpenAiProvider::connect(config).err().expect("no server").to_string();
        assert!(error.contains(&format!("127.0.0.1:{port}/v1/models")) && error.contains("3 tries"), "{error}");
    }
}
