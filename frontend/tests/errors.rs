//! What users see when a model is wrong: snapshot tests of rendered
//! diagnostics, one per kind of mistake, plus checks that several independent
//! errors are all reported.

use lpac_frontend::{Override, compile};

/// Compiles `src` (as `model.lpa`) and returns the rendered errors.
fn errors_of(src: &str, sets: &[&str]) -> String {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    match compile("model.lpa", src, &overrides) {
        Ok(_) => panic!("expected errors, but the model compiled:\n{src}"),
        Err(e) => e.render(),
    }
}

const HEADER: &str = "config {\n  d = 4\n  heads = 2\n}\n";

fn model(body: &str) -> String {
    format!("{HEADER}model m(tokens: i32[2, 3], x: [2, d]) {{\n{body}\n}}\n")
}

#[test]
fn unknown_name_suggests_the_closest() {
    insta::assert_snapshot!(errors_of(&model("  y = x * head\n  return sum(y)"), &[]));
}

#[test]
fn unknown_block_suggests_the_closest() {
    insta::assert_snapshot!(errors_of(&model("  y = layer_nrom[ln](x)\n  return sum(y)"), &[]));
}

#[test]
fn too_many_arguments() {
    insta::assert_snapshot!(errors_of(&model("  y = gelu(x, 2)\n  return sum(y)"), &[]));
}

#[test]
fn missing_argument() {
    insta::assert_snapshot!(errors_of(&model("  y = linear[p](x, d)\n  return sum(y)"), &[]));
}

#[test]
fn shape_mismatch_names_both_shapes_and_their_origins() {
    let body = "  a = full([2, 5], 1.0)\n  y = x + a\n  return sum(y)";
    let text = errors_of(&model(body), &[]);
    assert!(text.contains("f32[2,4]") && text.contains("f32[2,5]"), "{text}");
    assert!(text.contains("model.lpa:6:7"), "where `a` came from: {text}");
    insta::assert_snapshot!(text);
}

#[test]
fn matmul_mismatch_inside_a_prelude_block_shows_the_call() {
    insta::assert_snapshot!(errors_of(&model("  y = linear[p](x, 5, 3)\n  return sum(y)"), &[]));
}

#[test]
fn duplicate_parameter_path() {
    let body = "  a = linear(x, d, d)\n  b = linear(a, d, d)\n  return sum(b)";
    insta::assert_snapshot!(errors_of(&model(body), &[]));
}

#[test]
fn loss_must_be_a_scalar() {
    insta::assert_snapshot!(errors_of(&model("  return x"), &[]));
}

#[test]
fn if_needs_a_compile_time_bool() {
    insta::assert_snapshot!(errors_of(&model("  if x > 0.0 {\n    x = x * 2.0\n  }\n  return sum(x)"), &[]));
}

#[test]
fn inexact_integer_division_in_config() {
    let src = "config {\n  d = 10\n  heads = 4\n  head_dim = d / heads\n}\nmodel m(x: [2, d]) {\n  return sum(x)\n}\n";
    insta::assert_snapshot!(errors_of(src, &[]));
}

#[test]
fn failed_assert_shows_its_message() {
    let body = "  assert d % 2 == 0, \"d must be even\"\n  return sum(x)";
    // `%` is not an operator: this is a parse error, which is itself worth pinning.
    let text = errors_of(&model(body), &[]);
    assert!(text.contains("model.lpa:6:12"), "{text}");
    let body = "  assert d == heads * 3, \"d must be three heads wide\"\n  return sum(x)";
    insta::assert_snapshot!(errors_of(&model(body), &[]));
}

#[test]
fn file_without_model() {
    insta::assert_snapshot!(errors_of("config {\n  d = 4\n}\n", &[]));
}

#[test]
fn block_defined_twice() {
    let src = format!(
        "{HEADER}block f(x) {{\n  return x\n}}\nblock f(x) {{\n  return x\n}}\nmodel m(x: [2, d]) {{\n  return sum(f(x))\n}}\n"
    );
    insta::assert_snapshot!(errors_of(&src, &[]));
}

#[test]
fn unknown_dtype() {
    let src = format!("{HEADER}model m(x: f64[2, d]) {{\n  return sum(x)\n}}\n");
    insta::assert_snapshot!(errors_of(&src, &[]));
}

#[test]
fn runaway_loop() {
    insta::assert_snapshot!(errors_of(&model("  for i in 0..1000000 {\n    x = x + 1.0\n  }\n  return sum(x)"), &[]));
}

#[test]
fn recursion_is_stopped() {
    let src = format!("{HEADER}block f(x) {{\n  return f(x)\n}}\nmodel m(x: [2, d]) {{\n  return sum(f(x))\n}}\n");
    let text = errors_of(&src, &[]);
    assert!(text.contains("nested deeper than 200"), "{text}");
}

#[test]
fn bad_overrides() {
    let src = model("  return sum(x)");
    insta::assert_snapshot!(errors_of(&src, &["depth=3", "d=1.5", "heads=true"]));
}

#[test]
fn independent_errors_are_all_reported() {
    let body = "  a = x + full([2, 5], 1.0)\n  b = x @ full([3, 3], 1.0)\n  c = exp(tokens)\n  return sum(x)";
    let text = errors_of(&model(body), &[]);
    assert_eq!(text.matches("error:").count(), 4, "three errors and a count:\n{text}");
    assert!(text.contains("error: 3 errors"), "{text}");
}

#[test]
fn several_parse_errors_are_all_reported() {
    let body = "  a = (x +\n  b = x )\n  c = ] x\n  return sum(x)";
    let text = errors_of(&model(body), &[]);
    assert!(text.matches("\nerror: ").count() + 1 >= 3, "{text}");
}

#[test]
fn dtype_mismatch() {
    insta::assert_snapshot!(errors_of(&model("  y = x + tokens\n  return sum(y)"), &[]));
}

fn compiles(src: &str, sets: &[&str]) -> lpac_ir::Graph {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    match compile("model.lpa", src, &overrides) {
        Ok(m) => m.graph,
        Err(e) => panic!("expected the model to compile:\n{}", e.render()),
    }
}

#[test]
fn overriding_a_derived_key_skips_its_formula() {
    let src =
        "config {\n  d = 10\n  heads = 4\n  head_dim = d / heads\n}\nmodel m(x: [2, head_dim]) {\n  return sum(x)\n}\n";
    let g = compiles(src, &["head_dim=3"]);
    assert_eq!(g.ty(g.inputs().next().unwrap().0).shape, vec![2, 3]);
}

#[test]
fn mean_over_a_repeated_axis_counts_it_once() {
    let g = compiles(&model("  return sum(mean(x, [1, 1]))"), &[]);
    let text = lpac_ir::print(&g);
    assert!(text.contains("const 4.0"), "divides by d = 4 once:\n{text}");
}

#[test]
fn prelude_blocks_do_not_see_user_config_or_user_blocks() {
    // A user `sigmoid` with another signature must not break the prelude's `silu`.
    let src = format!(
        "{HEADER}block sigmoid(x, k) {{\n  return x * k\n}}\nmodel m(x: [2, d]) {{\n  return sum(silu(x)) + sum(sigmoid(x, 2.0))\n}}\n"
    );
    compiles(&src, &[]);
    let text = errors_of("config {\n  inf = 1.0\n}\nmodel m(x: [2]) {\n  return sum(x)\n}\n", &[]);
    assert!(text.contains("cannot be a config key"), "{text}");
}

#[test]
fn names_unset_on_the_path_taken_are_reported_even_after_other_errors() {
    let body = "  a = x + full([2, 5], 1.0)\n  for i in 0..0 {\n    y = x\n  }\n  return sum(y)";
    let text = errors_of(&model(body), &[]);
    assert!(text.contains("do not broadcast") && text.contains("`y` is not defined on this path"), "{text}");
}

#[test]
fn full_checks_its_value_against_the_dtype() {
    let text = errors_of(&model("  t = full([2], 2.5, i32)\n  return sum(x)"), &[]);
    assert!(text.contains("2.5 is not a value of dtype i32"), "{text}");
}
