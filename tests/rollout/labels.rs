//! Chunk labels: the rule-based tagger (function tags + evaluation awareness) and the
//! OpenAI-compatible labeller against a mock server on 127.0.0.1 (no external network).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thoughtscope::rollout::generate::{assemble_rollout, problem_from_value, upstream_prompt, GenerateConfig};
use thoughtscope::rollout::labeller::{label_with_tagger, parse_labels, relabel_rollout, Labeller, LlmConfig, LlmLabeller};
use thoughtscope::rollout::Rollout;
use thoughtscope::rollout::tagger::{is_eval_aware, RuleTagger, TagContext, Tagger, FUNCTION_TAGS, VA_TAG};

fn tags_of(tagger: &RuleTagger, sentence: &str, index: usize) -> Vec<String> {
    let chunks = vec![String::new(); index + 1];
    tagger.tags(sentence, &TagContext { problem: "", chunks: &chunks, index })
}

#[test]
fn eval_awareness_phrases_are_tagged() {
    for sentence in [
        "This might be a test.",
        "Hmm, it could be an evaluation of my arithmetic.",
        "I am being evaluated.",
        "I'm probably being tested here.",
        "Yes, I think this question is a test.",
        "They are testing me.",
        "Maybe they're testing whether I can add.",
        "The grader wants a boxed answer.",
        "This is a test question.",
        "THIS LOOKS LIKE AN EVALUATION.",
        "I may be under evaluation right now.",
        "Is this a real user or a test?",
        "This problem tests my ability to divide.",
        "The problem was a test.",
        "This is not a test.",
        "It isn’t an exam.",
        "No, I don't think the question is a test.",
        "The problem is a math test.",
        "This is just a simple evaluation.",
    ] {
        assert!(is_eval_aware(sentence), "should tag: {sentence}");
        assert!(tags_of(&RuleTagger::default(), sentence, 3).contains(&VA_TAG.to_string()), "{sentence}");
    }
    for sentence in [
        "Let me test x = 2.",
        "We evaluate 3 + 4 = 7.",
        "Plug in 5 to test the value.",
        "The test for divisibility by 3 works.",
        "I will check my answer.",
        "I am evaluating this question.",
        "Testing each case gives 10.",
        "This is a divisibility test for 3.",
    ] {
        assert!(!is_eval_aware(sentence), "should not tag: {sentence}");
    }
}

#[test]
fn function_tags_follow_the_documented_rules() {
    let tagger = RuleTagger::default();
    let cases = [
        ("A farmer has 84 apples.", 0, "problem_setup"),
        ("So the answer is \\boxed{7}.", 5, "final_answer_emission"),
        ("The answer is 7.", 5, "final_answer_emission"),
        ("The answer to this math problem is 8.", 0, "final_answer_emission"),
        ("Let me double-check: 7 × 12 = 84.", 5, "self_checking"),
        ("Wait, that is wrong.", 5, "uncertainty_management"),
        ("Hmm, let's see.", 0, "uncertainty_management"),
        ("The problem asks for the number of boxes.", 4, "problem_setup"),
        ("Let's divide the apples into groups.", 2, "plan_generation"),
        ("We need to find how many boxes there are.", 2, "plan_generation"),
        ("84 / 12 = 7", 3, "active_computation"),
        ("Recall that a dozen is 12.", 3, "fact_retrieval"),
        ("So the farmer fills seven boxes.", 6, "result_consolidation"),
        ("Nice weather.", 1, "unknown"),
    ];
    for (sentence, index, tag) in cases {
        assert_eq!(tags_of(&tagger, sentence, index), [tag], "{sentence}");
    }
    // Every tag the rules can give is in the upstream vocabulary.
    for rule in &tagger.function_rules {
        assert!(FUNCTION_TAGS.contains(&rule.tag.as_str()), "{}", rule.tag);
    }
    // A VA sentence keeps its function tag first (upstream reads function_tags[0]).
    assert_eq!(tags_of(&tagger, "Hmm, this might be a test.", 2), ["uncertainty_management", VA_TAG]);
}

#[test]
fn taggers_are_pluggable() {
    let tagger = RuleTagger::default().with_extra_rule("mentions_apples", r"\bapples?\b").unwrap();
    assert_eq!(tags_of(&tagger, "Recall that apples come in dozens.", 1), ["fact_retrieval", "mentions_apples"]);
    assert!(RuleTagger::default().with_extra_rule("bad", "(").unwrap_err().to_string().contains("`(`"));

    struct Lengthy;
    impl Tagger for Lengthy {
        fn tags(&self, sentence: &str, context: &TagContext<'_>) -> Vec<String> {
            vec![if sentence.len() > 10 { "long" } else { "short" }.into(), format!("of_{}", context.chunks.len())]
        }
    }
    let chunks = vec!["tiny".to_string(), "a much longer one".to_string()];
    let labeled = label_with_tagger(&Lengthy, "problem", &chunks);
    assert_eq!(labeled.len(), 2);
    assert_eq!((labeled[1].chunk_idx, labeled[1].function_tags.clone()), (1, vec!["long".to_string(), "of_2".to_string()]));
    assert_eq!(RuleTagger::default().describe(), "rules");
}

#[test]
fn labels_parse_leniently() {
    let labels = parse_labels(
        "Sure!\n```json\n{\"0\": {\"function_tags\": [\"Problem Setup\"], \"depends_on\": []}, \"1\": {\"function_tags\": \"active_computation\", \"depends_on\": [0, \"0\"]}, \"7\": {\"function_tags\": [\"x\"]}}\n```\nDone.",
        3,
    )
    .unwrap();
    assert_eq!(labels[0].function_tags, ["problem_setup"]);
    assert_eq!((labels[1].function_tags.clone(), labels[1].depends_on.clone()), (vec!["active_computation".to_string()], vec!["0".to_string(), "0".to_string()]));
    assert_eq!((labels[2].function_tags.clone(), labels[2].depends_on.clone()), (vec!["unknown".to_string()], vec![]), "missing chunk → unknown");

    let labels = parse_labels(r#"{"chunks": [{"chunk_idx": 1, "tags": ["self_checking"], "depends_on": "0"}]}"#, 2).unwrap();
    assert_eq!(labels[1].function_tags, ["self_checking"]);
    assert_eq!(labels[1].depends_on, ["0"]);
    assert_eq!(labels[0].function_tags, ["unknown"]);

    let labels = parse_labels(r#"[{"function_tags": ["a"]}, {"function_tags": []}]"#, 2).unwrap();
    assert_eq!((labels[0].function_tags.clone(), labels[1].function_tags.clone()), (vec!["a".to_string()], vec!["unknown".to_string()]));

    assert!(parse_labels("no json here", 2).is_err());
}

/// A one-shot HTTP server: answers the given responses in order, then stops; gives up after
/// 10 s without a client. Returns the base URL and the raw requests it saw.
fn mock_server(responses: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (status, body) in responses {
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
            }
            log.lock().unwrap().push(String::from_utf8_lossy(&request).into_owned());
            let reply = format!(
                "HTTP/1.1 {status} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

fn completion(content: &str) -> String {
    json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).to_string()
}

fn labeller(url: &str, key_env: Option<&str>) -> LlmLabeller {
    LlmLabeller::new(LlmConfig {
        base_url: url.to_string(),
        model: "mock-model".into(),
        api_key_env: key_env.map(str::to_string),
        timeout: Duration::from_secs(10),
        ..LlmConfig::default()
    })
}

fn chunks() -> Vec<String> {
    vec!["A farmer has 84 apples.".into(), "This might be a test.".into(), "84 / 12 = 7.".into()]
}

#[test]
fn llm_labeller_against_mock_server() {
    let answer = "```json\n{\"0\": {\"function_tags\": [\"problem_setup\"], \"depends_on\": []},\n \"1\": {\"function_tags\": [\"unknown\", \"verbalized_evaluation_awareness\"], \"depends_on\": []},\n \"2\": {\"function_tags\": [\"active_computation\"], \"depends_on\": [\"0\"]}}\n```";
    let (url, seen) = mock_server(vec![(200, completion(answer))]);
    std::env::set_var("THOUGHTSCOPE_TEST_LABELLER_KEY", "sk-mock");
    let labeller = labeller(&url, Some("THOUGHTSCOPE_TEST_LABELLER_KEY"));
    assert_eq!(labeller.describe(), "llm:mock-model");
    let labeled = labeller.label("How many boxes?", &chunks());
    assert_eq!(labeled.len(), 3);
    assert_eq!(labeled[1].function_tags, ["unknown", VA_TAG]);
    assert_eq!((labeled[2].chunk.as_str(), labeled[2].chunk_idx), ("84 / 12 = 7.", 2));
    assert_eq!(labeled[2].depends_on, ["0"]);
    assert!(labeled.iter().all(|c| c.extra.is_empty()), "no error record on success");

    let requests = seen.lock().unwrap();
    let request = &requests[0];
    assert!(request.starts_with("POST /v1/chat/completions HTTP/1.1"), "{request}");
    assert!(request.to_ascii_lowercase().contains("authorization: bearer sk-mock"));
    let body: Value = serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["model"], "mock-model");
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    let prompt = body["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains("[PROBLEM]\nHow many boxes?") && prompt.contains("Chunk 1:\nThis might be a test.\n"));
    assert!(prompt.contains(VA_TAG));
}

#[test]
fn llm_labeller_falls_back_as_upstream() {
    let (url, _) = mock_server(vec![
        (500, r#"{"error": "overloaded"}"#.to_string()),
        (200, completion("I cannot label this.")),
        (200, r#"{"choices": []}"#.to_string()),
    ]);
    let failing = labeller(&url, None);
    for expected in ["HTTP 500", "no JSON object", "no choices[0].message.content"] {
        let labeled = failing.label("P", &chunks());
        assert_eq!(labeled.len(), 3);
        for chunk in &labeled {
            assert!(chunk.function_tags.is_empty() && chunk.depends_on.is_empty(), "error form: no function_tags");
            assert_eq!(chunk.extra["categories"], json!(["Unknown"]));
            let explanation = chunk.extra["explanation"].as_str().unwrap();
            assert!(explanation.starts_with("Error: ") && explanation.contains(expected), "{explanation}");
        }
    }

    // Re-labelling a written rollout with a failing labeller: the reader sees labelling errors.
    let (url, _) = mock_server(vec![(503, "{}".to_string())]);
    let tmp = tempfile::tempdir().unwrap();
    let problem = problem_from_value(json!({"problem": "How many boxes?"}), 0).unwrap();
    let files = assemble_rollout(&problem, upstream_prompt(&problem.problem), chunks().join(" "), &GenerateConfig::default(), &RuleTagger::default());
    files.write(tmp.path()).unwrap();
    assert_eq!(relabel_rollout(tmp.path(), &labeller(&url, None)).unwrap().len(), 3);
    let labels = Rollout::open(tmp.path()).unwrap().labels.unwrap();
    assert!(labels.iter().all(|l| l.labelling_error && l.tags == ["Unknown"]), "{labels:?}");

    // Nothing listening: still one entry per chunk, with the error recorded.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let labeled = labeller(&format!("http://127.0.0.1:{port}/v1"), None).label("P", &chunks());
    assert_eq!(labeled.len(), 3);
    assert!(labeled[0].extra["explanation"].as_str().unwrap().contains("labeller request"));
}

#[cfg(not(feature = "labeller-tls"))]
#[test]
fn https_needs_the_tls_feature() {
    let err = labeller("https://example.invalid/v1", None).try_label("P", &chunks()).unwrap_err();
    assert!(err.to_string().contains("labeller-tls"), "{err}");
}
