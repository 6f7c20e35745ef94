// swift-tools-version: 6.0
import PackageDescription

// Swift `SIMD` FMA lowers to a library call unless a target CPU is named: 35x slower
// (docs/internals.md, "One GEMM path"). Every x86-64 machine this project runs on has AVX2+FMA; the
// AVX-512 kernels are C variants picked at run time (CKernels), not a build flag.
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
let cFlags: [CSetting] = [.unsafeFlags(["-march=haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
let cFlags: [CSetting] = []
#endif

// The numeric hot paths (kernels, forward pass, statistics, tokenization) are optimized even in
// debug builds, so `swift test` runs real models in seconds rather than minutes.
let hotFlags: [SwiftSetting] = cpuFlags + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "Assay",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "assay", targets: ["AssayCLI"]),
        .library(name: "AssayCommon", targets: ["AssayCommon"]),
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "Models", targets: ["Models"]),
        .library(name: "WeightDiff", targets: ["WeightDiff"]),
        .library(name: "Provenance", targets: ["Provenance"]),
        .library(name: "Probes", targets: ["Probes"]),
        .library(name: "Stats", targets: ["Stats"]),
        .library(name: "Tokenizers", targets: ["Tokenizers"]),
        .library(name: "GGUF", targets: ["GGUF"]),
        .library(name: "AssayBench", targets: ["AssayBench"]),
        // For the fuzz driver (Fuzz/), which builds it with sanitizers.
        .library(name: "FuzzHarnesses", targets: ["FuzzHarnesses"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLAPACK", path: "Sources/CLAPACK",
                       providers: [.apt(["liblapacke-dev"])]),
        // Assay's GEMM kernels: one C file, scalar/AVX2/AVX-512 variants picked at run time, so
        // no -march here (each variant names its own target); -O3 even in debug builds, and no
        // contraction of separate multiplies and adds (the kernels' bits must not depend on it).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off"])]),
        .target(name: "AssayCommon", swiftSettings: cpuFlags),
        .target(name: "TensorCore", dependencies: ["CBLAS", "CLAPACK", "CKernels"], swiftSettings: hotFlags),
        .target(name: "SafeTensors", dependencies: ["AssayCommon", "TensorCore"], swiftSettings: cpuFlags),
        .target(name: "Tokenizers", dependencies: ["AssayCommon", "GGUF"], swiftSettings: hotFlags),
        .target(name: "Models", dependencies: ["AssayCommon", "TensorCore", "SafeTensors", "GGUF"], swiftSettings: hotFlags),
        .target(name: "GGUF", dependencies: ["AssayCommon", "SafeTensors"], swiftSettings: hotFlags),
        .target(name: "WeightDiff", dependencies: ["AssayCommon", "TensorCore", "SafeTensors", "Models"], swiftSettings: cpuFlags),
        .target(name: "Provenance",
                dependencies: ["AssayCommon", "SafeTensors", "GGUF", "Tokenizers", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: cpuFlags),
        .target(name: "Stats", swiftSettings: hotFlags),
        .target(name: "Scan", dependencies: ["AssayCommon", "TensorCore", "Models", "Probes", "Stats"], swiftSettings: hotFlags),
        .target(name: "Reports", dependencies: ["AssayCommon", "Probes", "Scan", "WeightDiff", "History"], swiftSettings: cpuFlags),
        .target(name: "Probes", dependencies: ["AssayCommon", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: cpuFlags),
        .target(name: "Pipeline", dependencies: ["AssayCommon", "TensorCore", "Models", "Tokenizers", "Provenance", "Probes", "Stats", "Scan", "Reports", "WeightDiff"],
                swiftSettings: cpuFlags),
        .target(name: "History", dependencies: ["AssayCommon", .product(name: "GRDB", package: "GRDB.swift"),
                                                .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "NIOCore", package: "swift-nio"),
                                                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                .product(name: "Logging", package: "swift-log")],
                swiftSettings: cpuFlags),
        .target(name: "Sweep", dependencies: ["AssayCommon", "History", "Pipeline", "Scan", "Reports", "Provenance", "Probes", "Stats", "Models",
                                              "Tokenizers", .product(name: "Yams", package: "Yams")],
                swiftSettings: cpuFlags),
        // The benchmarks behind `assay bench` (the CLI parses the flags and prints the figures).
        .target(name: "AssayBench", dependencies: ["CBLAS", "AssayCommon", "TensorCore", "SafeTensors", "Models", "Tokenizers", "Probes",
                                                   "Stats", "Scan", "Reports", "Pipeline", "History", "Sweep"],
                swiftSettings: cpuFlags),
        // The parser harnesses shared by the fuzz driver (Fuzz/) and the corpus replay tests.
        .target(name: "FuzzHarnesses", dependencies: ["AssayCommon", "SafeTensors", "GGUF", "Tokenizers", "Provenance", "Probes", "Models",
                                                     "Sweep"],
                swiftSettings: cpuFlags),
        .executableTarget(name: "AssayCLI",
                          dependencies: ["AssayCommon", "TensorCore", "SafeTensors", "Tokenizers", "Models", "WeightDiff", "Provenance",
                                         "Probes", "Stats", "Scan", "Reports", "Pipeline", "History", "Sweep", "AssayBench",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: cpuFlags),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"], swiftSettings: cpuFlags),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"], swiftSettings: cpuFlags),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "AssayCommon", "GGUF"], swiftSettings: cpuFlags),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "TensorCore", "SafeTensors", "AssayCommon", "GGUF"], swiftSettings: cpuFlags),
        .testTarget(name: "WeightDiffTests", dependencies: ["WeightDiff", "SafeTensors", "TensorCore"], swiftSettings: cpuFlags),
        .testTarget(name: "ProvenanceTests", dependencies: ["Provenance", "SafeTensors"], swiftSettings: cpuFlags),
        .testTarget(name: "ProbesTests", dependencies: ["Probes", "AssayCommon"], swiftSettings: cpuFlags),
        .testTarget(name: "StatsTests", dependencies: ["Stats"], swiftSettings: cpuFlags),
        .testTarget(name: "ScanTests", dependencies: ["AssayCommon", "Probes", "Scan", "Models", "TensorCore"], swiftSettings: cpuFlags),
        .testTarget(name: "AssayCLITests", dependencies: ["AssayCLI", "AssayCommon", "SafeTensors", "Scan", "History", "Sweep"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "SafeTensors", "TensorCore"], swiftSettings: cpuFlags),
        .testTarget(name: "ReportsTests", dependencies: ["Reports", "Scan", "History", "AssayCommon"], swiftSettings: cpuFlags),
        .testTarget(name: "FuzzHarnessesTests", dependencies: ["FuzzHarnesses"], swiftSettings: cpuFlags),
        .testTarget(name: "SweepTests", dependencies: ["AssayCommon", "Scan", "History", "Sweep", .product(name: "GRDB", package: "GRDB.swift"),
                                                       .product(name: "Yams", package: "Yams")], swiftSettings: cpuFlags),
    ]
)
