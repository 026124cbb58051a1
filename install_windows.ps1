# Side-Step installer for Windows (PowerShell).
# Installs uv when missing, installs Side-Step's dependencies, and tells you where the
# model checkpoints go and how to start.
$ErrorActionPreference = "Stop"
Set-Location -Path $PSScriptRoot

if (-not (Get-Command uv -ErrorAction SilentlyContinue)) {
    Write-Host "Installing uv (Python package manager)..."
    powershell -ExecutionPolicy Bypass -NoProfile -Command "irm https://astral.sh/uv/install.ps1 | iex"
    $env:Path = "$env:USERPROFILE\.local\bin;$env:Path"
    if (-not (Get-Command uv -ErrorAction SilentlyContinue)) {
        Write-Error "uv was installed but is not on PATH. Open a new terminal and run this script again."
    }
}

Write-Host "Installing Side-Step dependencies (uv sync)..."
uv sync
if ($LASTEXITCODE -ne 0) { Write-Error "uv sync failed (exit $LASTEXITCODE). See the messages above." }

Write-Host ""
Write-Host "Side-Step is installed." -ForegroundColor Green
Write-Host "Model checkpoints: put the ACE-Step 1.5 'checkpoints' folder (with acestep-v15-turbo\, vae\"
Write-Host "and Qwen3-Embedding-0.6B\) anywhere, for example .\checkpoints, and point Side-Step at it"
Write-Host "on first run (or with --checkpoint-dir)."
Write-Host ""
Write-Host "Try it without any download:   uv run python train.py demo"
Write-Host "Start the guided wizard:       uv run python train.py"
