//! The documentation shows the code that is tested.

/// The README's client helper is exactly `e2e/resumable.mjs`, which the end-to-end suite uses.
#[test]
fn the_readme_client_helper_is_the_tested_one() {
    let readme = include_str!("../README.md");
    let helper = include_str!("../e2e/resumable.mjs");
    let code = &helper[helper.find("import { io }").expect("the helper imports socket.io-client")..];
    assert!(
        readme.contains(code.trim_end()),
        "README's helper differs from e2e/resumable.mjs: copy the file's code into the README"
    );
}
