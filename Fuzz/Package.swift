// swift-tools-version: 6.0
import PackageDescription

// libFuzzer harnesses for Assay's parsers (FUZZING.md). Built by scripts/fuzz.sh with
// `--sanitize fuzzer --sanitize address`; never part of the main build or `swift test`.
let package = Package(
    name: "AssayFuzz",
    dependencies: [.package(name: "Assay", path: "..")],
    targets: [
        .executableTarget(
            name: "AssayFuzz",
            dependencies: [.product(name: "FuzzHarnesses", package: "Assay")],
            // libFuzzer supplies main().
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ]
)
