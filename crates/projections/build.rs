// `sqlx::migrate!` embeds the migrations: a new or changed migration must rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
