"""`python -m codecomp.serve.container --frontend tcp://HOST:PORT --checkpoint PATH --model NAME`."""

from codecomp.serve.container.process import main

main()
