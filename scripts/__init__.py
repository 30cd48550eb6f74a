"""Cron entry points, thin: parse arguments, take a lock, call a worker function, exit with a clear
code. Run them from the project folder: `.venv/bin/python -m scripts.<name>`. Each is safe to run
while another copy (or the scheduler's job) runs: the lock makes the later one step aside."""
