// swift-tools-version: 6.0
import PackageDescription

// Swift `SIMD` FMA lowers to a library call unless a target CPU is named (see DESIGN.md,
// "Performance facts"): 35x slower. Every x86-64 machine this project runs on has AVX2+FMA.
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
let cFlags: [CSetting] = [.unsafeFlags(["-march=haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
let cFlags: [CSetting] = []
#endif

let package = Package(
    name: "Assay",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "assay", targets: ["AssayCLI"]),
        .library(name: "AssayCommon", targets: ["AssayCommon"]),
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "Provenance", targets: ["Provenance"]),
        .library(name: "Tokenizers", targets: ["Tokenizers"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLAPACK", path: "Sources/CLAPACK",
                       providers: [.apt(["liblapacke-dev"])]),
        .target(name: "AssayCommon", swiftSettings: cpuFlags),
        .target(name: "TensorCore", dependencies: ["CBLAS", "CLAPACK"], swiftSettings: cpuFlags),
        .target(name: "SafeTensors", dependencies: ["AssayCommon", "TensorCore"], swiftSettings: cpuFlags),
        .target(name: "Provenance",
                dependencies: ["AssayCommon", "SafeTensors", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: cpuFlags),
        .target(name: "Tokenizers", dependencies: ["AssayCommon"], swiftSettings: cpuFlags),
        .executableTarget(name: "AssayCLI",
                          dependencies: ["AssayCommon", "TensorCore", "SafeTensors", "Provenance", "Tokenizers",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: cpuFlags),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"], swiftSettings: cpuFlags),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"], swiftSettings: cpuFlags),
        .testTarget(name: "ProvenanceTests", dependencies: ["Provenance", "SafeTensors"], swiftSettings: cpuFlags),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "AssayCommon"], swiftSettings: cpuFlags),
        .testTarget(name: "AssayCLITests", dependencies: ["AssayCLI", "SafeTensors"], swiftSettings: cpuFlags),
    ]
)
