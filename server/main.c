/* thumbgate entry point (placeholder until the server lands). */
#include <stdio.h>
int main(void)
{
    puts("thumbgate: server not built yet");
    return 1;
}
