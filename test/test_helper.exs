:inets.start()
ExUnit.configure(exclude: [:chaos_long])
ExUnit.start(capture_log: true)
