((S'touch'
S'/tmp/x'
lisubprocess
Popen
.