@echo off
rem Double-click launcher: runs install_windows.ps1 with the execution policy bypassed
rem for this one process only (your system policy is not changed).
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0install_windows.ps1"
pause
