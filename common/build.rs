// Re-embed the migrations whenever one is added or changed (`sqlx::migrate!` reads them at
// compile time).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
