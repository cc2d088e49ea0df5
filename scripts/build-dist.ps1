# Windows variant of scripts/build-dist.sh: cross-build the Linux x86-64 `handler` and assemble
# dist/ (host.json, IncrementalCopy/, FullLoad/, handler) for `azd package` / `azd deploy`.
#
# Building a Linux binary on Windows needs a Linux linker. Options, in order of simplicity:
#   1. Run scripts/build-dist.sh in WSL (this script does that when `wsl` is available).
#   2. cargo-zigbuild: `cargo install cargo-zigbuild`, install zig, then
#      $env:CDC_BUILD_TOOL = 'cargo zigbuild'; ./scripts/build-dist.ps1
#   3. `cross` (Docker): $env:CDC_BUILD_TOOL = 'cross build'.
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')

$target = if ($env:CDC_BUILD_TARGET) { $env:CDC_BUILD_TARGET } else { 'x86_64-unknown-linux-musl' }
$tool = if ($env:CDC_BUILD_TOOL) { $env:CDC_BUILD_TOOL } else { '' }

if (-not $tool -and (Get-Command wsl -ErrorAction SilentlyContinue)) {
    Write-Host "build-dist: building inside WSL with scripts/build-dist.sh"
    wsl --exec sh ./scripts/build-dist.sh
    if ($LASTEXITCODE -ne 0) { throw "build-dist.sh failed in WSL (exit $LASTEXITCODE)" }
    return
}
if (-not $tool) { $tool = 'cargo zigbuild' }

$targetDirName = $target -replace '\.[0-9].*$', ''
$cargoTargetDir = if ($env:CARGO_TARGET_DIR) { $env:CARGO_TARGET_DIR } else { 'target' }

if ($tool -eq 'cargo zigbuild' -or $tool -eq 'cargo build') {
    rustup target add $targetDirName
    if ($LASTEXITCODE -ne 0) { throw "rustup target add $targetDirName failed" }
}

Write-Host "build-dist: $tool --release --target $target"
$parts = $tool.Split(' ')
& $parts[0] $parts[1..($parts.Length - 1)] --release --locked --bin handler --target $target
if ($LASTEXITCODE -ne 0) { throw "$tool failed (exit $LASTEXITCODE)" }

$binary = Join-Path $cargoTargetDir "$targetDirName/release/handler"
if (-not (Test-Path $binary)) { throw "build-dist: expected binary not found: $binary" }

if (Test-Path dist) { Remove-Item -Recurse -Force dist }
New-Item -ItemType Directory -Path dist | Out-Null
Copy-Item host.json dist/
foreach ($fn in 'IncrementalCopy', 'FullLoad', 'CopyTable') {
    if (-not (Test-Path "$fn/function.json")) { throw "build-dist: missing $fn/function.json" }
}
# Every function folder (a top-level folder with a function.json).
foreach ($dir in Get-ChildItem -Directory | Where-Object { Test-Path (Join-Path $_.FullName 'function.json') }) {
    New-Item -ItemType Directory -Path "dist/$($dir.Name)" | Out-Null
    Copy-Item (Join-Path $dir.FullName 'function.json') "dist/$($dir.Name)/"
}
Copy-Item $binary dist/handler
# A zip made on Windows carries no Unix executable bit (Azure/azure-functions-core-tools#2510:
# a custom handler deployed from Windows failed to start with "permission denied" on Linux
# plans). Prefer the WSL path above or a Linux CI job for real deployments.
Write-Warning "build-dist: dist/handler was assembled on Windows and has no executable bit; if the app logs 'permission denied', deploy from WSL or Linux."
Write-Host "build-dist: dist/ ready (target $target)"
