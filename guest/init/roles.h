/* The two roles of the init binary (docs/protocol.md §5). */
#ifndef MA_ROLES_H
#define MA_ROLES_H

int stage1_main(void);
int pid1_main(void);

/* Shared by both roles: open /dev/console on fds 0-2 that are closed. */
void ensure_stdio(void);

#endif
