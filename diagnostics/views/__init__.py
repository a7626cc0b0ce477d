"""Server-rendered pages. Thin: they parse input, call a selector or a service, render."""
